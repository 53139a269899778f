using System.Text.Json;

namespace MLNetFinetune.Tests.Cli;

/// <summary>
/// <c>--field-map</c> on every verb that reads pairs, and <c>evaluate --report</c> of a single model, on the bundled
/// base model and a few held-out pairs saved under other field names.
/// </summary>
[Collection(TorchCollection.Name)]
public class FieldMapCliTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    static string Ok(params string[] args)
    {
        var (code, stdout, stderr) = Run(args);
        Assert.True(code == 0, $"`{string.Join(' ', args)}` failed: {stderr}");
        return stdout;
    }

    static readonly string BaseModel = RepoPaths.Of("models", "facts-base");

    // The first rows of the bundled held-out pairs, with fields renamed: q, a, c (and kind, which no verb asks for).
    (string Path, JsonElement[] Rows) Renamed(int count)
    {
        var rows = File.ReadLines(RepoPaths.Of("examples", "data", "facts", "heldout.jsonl")).Take(count)
            .Select(l => JsonDocument.Parse(l).RootElement).ToArray();
        string path = _dir.File("renamed.jsonl", string.Concat(rows.Select(r => JsonSerializer.Serialize(new
        {
            q = r.GetProperty("question").GetString(), a = r.GetProperty("answer").GetString(),
            c = r.GetProperty("cloze").GetString(), kind = r.GetProperty("kind").GetString(),
        }) + "\n")));
        return (path, rows);
    }

    [Fact]
    public void EvaluateReadsMappedFieldsAndWritesASingleModelReport()
    {
        var (pairs, rows) = Renamed(3);
        string report = Path.Combine(_dir.Path, "reports", "facts-base.md");

        string stdout = Ok("evaluate", "--pairs", pairs, "--field-map", "q=question, a=answer", "--model", BaseModel, "--max-new-tokens", "3", "--report", report);

        Assert.Contains($"{BaseModel}: exact match ", stdout);
        Assert.Contains(", 3 rows", stdout);
        string csv = Path.ChangeExtension(report, ".csv");
        Assert.Contains($"report written to {report} (and {csv})", stdout);
        string[] md = File.ReadAllLines(report);
        Assert.Equal("| metric | model |", md[0]);
        Assert.Contains(md, l => l.StartsWith("| exact match | ", StringComparison.Ordinal));
        Assert.Contains(md, l => l.StartsWith("| loss | ", StringComparison.Ordinal));
        Assert.Equal(3, md.Count(l => l.StartsWith("| Passage: ", StringComparison.Ordinal)));
        foreach (var row in rows)
            Assert.Contains(md, l => l.StartsWith($"| {row.GetProperty("question").GetString()!.ReplaceLineEndings(" ")} | {row.GetProperty("answer").GetString()} | ", StringComparison.Ordinal));
        string csvText = File.ReadAllText(csv);
        Assert.StartsWith("question,expected,model_answer,model_exact", csvText);
        foreach (var row in rows) Assert.Contains($",{row.GetProperty("answer").GetString()},", csvText);
    }

    [Fact]
    public void EvaluateClozeAndExploreAndFinetuneReadMappedFields()
    {
        var (pairs, _) = Renamed(6);

        string cloze = Ok("evaluate", "--cloze", "--pairs", pairs, "--field-map", "q=question,a=answer,c=cloze", "--model", BaseModel, "--max-new-tokens", "4");
        Assert.Matches(@": cloze recall \d+\.\d% \(\d/\d, ", cloze); // the six rows are about at most six distinct cloze prompts

        string explore = Ok("explore", "--pairs", pairs, "--field-map", "q=question,a=answer", "-n", "1");
        Assert.Contains("pairs: 6 rows, layout QuestionAnswer (question, answer)", explore);

        string run = Path.Combine(_dir.Path, "tuned");
        string finetune = Ok("finetune", "--pairs", pairs, "--field-map", "q=question,a=answer", "--base", BaseModel, "--out", run,
            "--steps", "2", "--batch-size", "2", "--block-size", "64", "--eval-fraction", "0.2", "--threads", "1", "--device", "cpu");
        Assert.Contains($"model written to {Path.Combine(run, "model")}", finetune);
        Assert.True(File.Exists(Path.Combine(run, "model", "model.safetensors")));
    }

    [Fact]
    public void WithoutTheMapTheFileIsRejectedAndABadMapNamesItsBadItem()
    {
        var (pairs, _) = Renamed(2);
        var (code, _, stderr) = Run("explore", "--pairs", pairs);
        Assert.Equal(1, code);
        Assert.Contains("cannot tell the layout from the fields (q, a, c, kind)", stderr);

        foreach (var (map, problem) in new[]
        {
            ("q=question,a", "'a' is not file_field=layout_field"),
            ("q=question,,a=answer", "'' is not file_field=layout_field"),
            ("q=question,a=answer=x", "'a=answer=x' is not file_field=layout_field"),
            ("q=question, =answer", "' =answer' is not file_field=layout_field"),
            ("q=question,q=answer", "'q=answer' maps field 'q' a second time"),
            ("q=question,a=question", "'a=question' maps a second field onto 'question'"),
        })
            foreach (string[] verb in new[] { new[] { "explore" }, ["evaluate", "--model", BaseModel], ["evaluate", "--cloze", "--model", BaseModel], ["finetune", "--base", BaseModel, "--out", _dir.Path] })
            {
                (code, _, stderr) = Run([.. verb, "--pairs", pairs, "--field-map", map]);
                Assert.Equal(1, code);
                Assert.StartsWith($"error: --field-map: {problem}", stderr);
                Assert.Single(stderr.TrimEnd().Split('\n'));
            }
    }

    [Fact]
    public void ClozeHasNoReportToWrite()
    {
        var (pairs, _) = Renamed(1);
        var (code, _, stderr) = Run("evaluate", "--cloze", "--pairs", pairs, "--model", BaseModel, "--report", Path.Combine(_dir.Path, "r.md"));
        Assert.Equal(1, code);
        Assert.Equal("error: --report writes answers to pairs; --cloze has none to write (drop one of them).", stderr.TrimEnd());
    }
}
