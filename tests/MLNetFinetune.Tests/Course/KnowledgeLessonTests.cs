using System.Text.Json.Nodes;
using MLNetFinetune.Course;

namespace MLNetFinetune.Tests.Course;

/// <summary>The knowledge lesson on tiny settings: a short first lesson gives the model the edits start from.</summary>
[Collection(TorchCollection.Name)]
public class KnowledgeLessonTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void TheLessonEndsWithItsJsonAndEveryRateInRange()
    {
        string data = RepoPaths.Of("examples", "data", "facts");
        FactsLesson.Run(new FactsLessonOptions
        {
            Data = data, BaseModel = RepoPaths.Of("models", "facts-base"), Output = Path.Combine(_dir.Path, "first"), MaxSteps = 80, MaxHeldOutRows = 4,
            Threads = 1, Device = "cpu",
        }, TextWriter.Null);

        var output = new StringWriter();
        var result = KnowledgeLesson.Run(new KnowledgeLessonOptions
        {
            Data = data, TunedModel = Path.Combine(_dir.Path, "first", "finetune", "model"), Output = Path.Combine(_dir.Path, "knowledge"),
            ChangedFacts = 4, NewEntities = 2, Steps = 8, Probes = 8, Threads = 1, Device = "cpu",
        }, output);

        var lines = output.ToString().TrimEnd().Split('\n');
        var json = JsonNode.Parse(lines[^1])!.AsObject();
        string[] keys = ["changed_trained_em", "changed_paraphrase_em", "changed_cloze", "old_value_rate", "new_trained_em", "new_paraphrase_em", "locality"];
        foreach (string key in keys)
        {
            double value = (double)json[key]!;
            Assert.InRange(value, 0, 1);
        }
        Assert.InRange((double)json["seconds"]!, 0, 600);
        Assert.Equal(4, json["levers"]!.AsObject().Count);
        Assert.Contains((string)json["best_lever"]!, new[] { "plain", "paraphrased", "paraphrased+replay", "lora+paraphrased+replay" });
        // Before editing, the changed facts were answered with their old values (that is how they were chosen) and the new ones not at all.
        Assert.Equal(1.0, (double)json["before"]!["old_value_rate"]!);
        Assert.Equal(0.0, (double)json["before"]!["changed_trained_em"]!);
        Assert.Equal(1.0, (double)json["before"]!["locality"]!);
        Assert.Equal(4, result.Before.ChangedTrained.Count);
        Assert.Equal(8, result.Before.NewTrained.Count);
        Assert.Contains(lines, l => l.StartsWith("| changed facts, paraphrased questions |", StringComparison.Ordinal));
    }
}
