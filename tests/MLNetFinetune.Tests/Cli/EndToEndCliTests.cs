using MLNetFinetune.Cli;

namespace MLNetFinetune.Tests.Cli;

/// <summary>The command line's whole path on tiny settings: pretrain → finetune → evaluate → export → generate.</summary>
[Collection(TorchCollection.Name)]
public class EndToEndCliTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    string Run(params string[] args) => RunWithInput("", args);

    static string RunWithInput(string input, params string[] args) => CliRunner.Succeeds(input, args);

    // Of the 40 continent pairs, the tiny finetuned model answers 9 exactly (measured; it has learnt to answer a continent,
    // "Asia" for all, where the base answers none); the floor is a little below that.
    const int FinetunedExactMatchFloor = 7;

    static int ExactHits(string evaluate, string model)
    {
        var line = System.Text.RegularExpressions.Regex.Match(evaluate,
            $@"^{System.Text.RegularExpressions.Regex.Escape(model)}: exact match [0-9.]+% \((\d+)/40,", System.Text.RegularExpressions.RegexOptions.Multiline);
        Assert.True(line.Success, $"no exact match line for {model} in: {evaluate}");
        return int.Parse(line.Groups[1].Value);
    }

    [Fact]
    public void PretrainFinetuneEvaluateExportGenerate()
    {
        // Short answers a tiny model can get exactly right: the continents of the first 40 countries of the facts table.
        string pairs = _dir.File("continents.jsonl", string.Concat(File.ReadLines(RepoPaths.Of("examples", "data", "facts", "facts.csv"))
            .Select(l => l.Split(',')).Where(f => f.Length == 4 && f[0] == "country" && f[2] == "continent").Take(40)
            .Select(f => System.Text.Json.JsonSerializer.Serialize(new { question = $"Which continent is {f[1]} in?", answer = f[3] }) + "\n")));
        string tiny = "--threads 1 --device cpu --block-size 64 --batch-size 4 --eval-fraction 0.1";
        string pretrained = Path.Combine(_dir.Path, "base"), tuned = Path.Combine(_dir.Path, "tuned");

        string pretrain = Run(["pretrain", "--corpus", RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst"), "--vocab-size", "300",
            "--preset", "tiny", "--out", pretrained, "--steps", "20", "--lr", "3e-3", .. tiny.Split(' ')]);
        Assert.Contains("step 20/20", pretrain);
        Assert.True(File.Exists(Path.Combine(pretrained, "metrics.csv")));
        Assert.True(new FileInfo(Path.Combine(pretrained, "loss.png")).Length > 1000, "pretraining draws its loss curve");

        string finetune = Run(["finetune", "--pairs", pairs, "--base", Path.Combine(pretrained, "model"), "--out", tuned, "--steps", "40", "--lr", "2e-2",
            "--lora-rank", "4", .. tiny.Split(' ')]);
        Assert.Contains("model written to", finetune);
        Assert.True(File.Exists(Path.Combine(tuned, "adapter", "adapter_config.json")));

        string report = Path.Combine(_dir.Path, "compare.md");
        string evaluate = Run(["evaluate", "--pairs", pairs, "--model", Path.Combine(tuned, "model"), "--base", Path.Combine(pretrained, "model"),
            "--max-new-tokens", "8", "--report", report]);
        Assert.True(File.Exists(report) && File.Exists(Path.ChangeExtension(report, ".csv")));
        // Each model's line: "<dir>: exact match 22.5% (9/40, 95% CI …)". Same seed, one thread, CPU: the same count every run.
        Assert.True(ExactHits(evaluate, Path.Combine(tuned, "model")) >= FinetunedExactMatchFloor, $"the finetuned model answers too few pairs exactly: {evaluate}");
        Assert.Equal(0, ExactHits(evaluate, Path.Combine(pretrained, "model")));

        // An int4 export scored against its float32 model, by the same evaluate: the quantized answers stay close.
        string int4 = Path.Combine(_dir.Path, "int4");
        Assert.Contains("(int4 weights,", Run(["export", Path.Combine(tuned, "model"), "--out", int4, "--quantize", "int4", "--block-size", "32"]));
        string quantized = Run(["evaluate", "--pairs", pairs, "--model", int4, "--base", Path.Combine(tuned, "model"), "--max-new-tokens", "8"]);
        Assert.InRange(ExactHits(quantized, int4), ExactHits(quantized, Path.Combine(tuned, "model")) - 4, 40);

        Run(["export", Path.Combine(tuned, "model")]);
        string generated = Run(["generate", Path.Combine(tuned, "model", "onnx"), "-p", "### Question:\nWhich continent is Peru in?\n\n### Answer:", "--max-new-tokens", "5", "--provider", "cpu"]);
        Assert.EndsWith("\n", generated);
        Assert.False(string.IsNullOrWhiteSpace(generated), "generate wrote nothing but the line end");
    }

    [Fact]
    public void PretrainsAPublishedShapeCutToOneLayer()
    {
        // SmolLM2-135M's shape (grouped-query attention, tied embeddings, RMSNorm, SwiGLU) with one of its 30 layers.
        string run = Path.Combine(_dir.Path, "smollm2");
        Run(["pretrain", "--corpus", RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst"), "--vocab-size", "300", "--preset", "smollm2-135m",
            "--layers", "1", "--out", run, "--steps", "2", "--threads", "1", "--device", "cpu", "--block-size", "32", "--batch-size", "2", "--eval-fraction", "0"]);
        var config = MLNetFinetune.ModelFiles.ModelConfig.Load(Path.Combine(run, "model", "config.json"));
        Assert.Equal(("llama", 576, 9, 3, 1, true, 320), (config.ModelType, config.HiddenSize, config.NumAttentionHeads, config.KeyValueHeads, config.NumHiddenLayers, config.TieWordEmbeddings, config.VocabSize));
        string ids = Run(["generate", Path.Combine(run, "model"), "--prompt", "The", "--max-new-tokens", "3", "--ignore-eos", "--print-ids", "--device", "cpu", "--threads", "1"]);
        var printed = ids.Trim().Split(',').Select(int.Parse).ToArray();
        Assert.True(printed.Length >= 4 && printed.All(id => id is >= 0 and < 320), ids);
    }

    [Fact]
    public void FactsPretrainQuickstartChat()
    {
        // The quickstart's own path on a tiny model: facts → corpus and pairs → pretrain → quickstart → chat.
        string data = Path.Combine(_dir.Path, "facts"), pretrained = Path.Combine(_dir.Path, "base"), run = Path.Combine(_dir.Path, "quickstart");
        string facts = Run("facts", "--table", RepoPaths.Of("examples", "data", "facts", "facts.csv"), "--out", data, "--rounds", "2");
        Assert.Contains("363 entities", facts);

        Run("pretrain", "--corpus", Path.Combine(data, "corpus.jsonl.zst"), "--vocab-size", "400", "--preset", "tiny", "--out", pretrained,
            "--steps", "10", "--lr", "3e-3", "--threads", "1", "--device", "cpu", "--block-size", "64", "--batch-size", "4");

        string[] lines = Run("quickstart", "--data", data, "--base", Path.Combine(pretrained, "model"), "--out", run,
            "--steps", "6", "--max-heldout", "6", "--threads", "1", "--quantize", "int4").TrimEnd().Split('\n');
        using var summary = System.Text.Json.JsonDocument.Parse(lines[^1]);
        foreach (var key in new[] { "base_extraction_em", "finetuned_extraction_em", "base_recall_em", "finetuned_recall_em", "base_cloze_recall", "seconds", "int4_extraction_em", "int4_recall_em" })
            Assert.InRange(summary.RootElement.GetProperty(key).GetDouble(), 0, key == "seconds" ? 3600 : 1);
        Assert.Equal(12, summary.RootElement.GetProperty("heldout_rows").GetInt32());
        Assert.Contains(lines, l => l.StartsWith("| extraction exact match | 6 |", StringComparison.Ordinal));
        Assert.True(File.Exists(Path.Combine(run, "finetune", "metrics.csv")) && File.Exists(Path.Combine(run, "finetune", "loss.png")));
        // The int4 export of the finetuned model, scored on the same rows beside float32.
        Assert.Contains("| held-out pairs | rows | finetuned, float32 (TorchSharp) | finetuned, int4 (ONNX Runtime) |", lines);
        Assert.Equal(2, lines.Count(l => l.StartsWith("| recall exact match | 6 |", StringComparison.Ordinal)));
        Assert.Contains(lines, l => l.StartsWith("answers identical to float32's: ", StringComparison.Ordinal) && l.EndsWith(" of 12", StringComparison.Ordinal));
        Assert.Contains("MatMulNBits", Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(run, "onnx-int4", "model.onnx"))).Graph.Node.Select(n => n.OpType));

        string chat = RunWithInput("What is the capital of Peru?\nWhat is the capital of Chile?\n\n", "chat", Path.Combine(run, "onnx"), "--max-new-tokens", "4", "--provider", "cpu");
        // Each question gets "> " then its answer and a line end; the empty line after the last answer gets only "> " and ends the conversation.
        string[] turns = chat.Split('\n');
        Assert.Equal("> ", turns[^1]);
        string[] answers = turns[..^1];
        Assert.Equal(2, answers.Length);
        Assert.All(answers, a => Assert.True(a.StartsWith("> ", StringComparison.Ordinal) && !string.IsNullOrWhiteSpace(a[2..]), $"an empty answer in: {chat}"));
    }

    [Fact]
    public void QuickstartNamesHeldOutDataWithoutBothKinds()
    {
        string data = Path.Combine(_dir.Path, "facts");
        Run("facts", "--table", RepoPaths.Of("examples", "data", "facts", "facts.csv"), "--out", data, "--rounds", "1");
        string heldOut = Path.Combine(data, "heldout.jsonl");
        File.WriteAllLines(heldOut, File.ReadAllLines(heldOut).Where(l => l.Contains("\"kind\":\"recall\"")));
        var error = new StringWriter();
        int code = CliApp.Run(["quickstart", "--data", data, "--base", _dir.Path, "--out", Path.Combine(_dir.Path, "run")], new StringWriter(), error);
        Assert.Equal(1, code);
        Assert.Equal($"error: {heldOut}: needs pairs of both kinds (kind \"extraction\" and \"recall\"); it has 0 and 428", error.ToString().TrimEnd());
    }
}
