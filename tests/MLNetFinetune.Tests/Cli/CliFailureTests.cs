namespace MLNetFinetune.Tests.Cli;

/// <summary>
/// Each verb's failures on bad input: exit code 1 and one line on stderr that names the file and what is wrong with it.
/// </summary>
[Collection(TorchCollection.Name)]
public class CliFailureTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static readonly string BaseModel = RepoPaths.Of("models", "facts-base");

    // Runs a command that must fail; returns its one error line.
    static string Fails(params string[] args)
    {
        var (code, stdout, stderr) = CliRunner.Run(args);
        Assert.True(code == 1, $"`{string.Join(' ', args)}` exited {code}: {stdout}{stderr}");
        string line = stderr.TrimEnd();
        Assert.DoesNotContain('\n', line);
        Assert.StartsWith("error: ", line);
        return line;
    }

    string Missing(string name) => Path.Combine(_dir.Path, name);

    [Fact]
    public void PretrainOnAMissingCorpus()
    {
        string corpus = Missing("corpus.jsonl");
        Assert.Equal($"error: Data path '{corpus}' does not exist (give a file, a folder or a glob).",
            Fails("pretrain", "--corpus", corpus, "--out", Missing("run"), "--steps", "1"));
    }

    [Fact]
    public void PretrainNeedsCorpusOrShardsAndShardsNeedTheirTokenizer()
    {
        const string oneOfThem = "error: Give the training data as --corpus (text) or --shards (token shards), one of them.";
        Assert.Equal(oneOfThem, Fails("pretrain", "--out", Missing("run"), "--steps", "1"));
        Assert.Equal(oneOfThem, Fails("pretrain", "--corpus", Missing("c.jsonl"), "--shards", Missing("shards"), "--out", Missing("run"), "--steps", "1"));
        Assert.Equal("error: --shards needs --tokenizer: the tokenizer the shards were written with.",
            Fails("pretrain", "--shards", Missing("shards"), "--out", Missing("run"), "--steps", "1"));
    }

    [Fact]
    public void TheKnowledgeLessonWithoutTheFirstLessonsModel()
    {
        string tuned = Missing("quickstart-model");
        Assert.Equal($"error: '{tuned}' holds no model. Run `mlnet-finetune quickstart` first (it writes runs/quickstart/finetune/model), or pass --tuned FOLDER.",
            Fails("lesson", "knowledge", "--tuned", tuned));
    }

    [Fact]
    public void PretrainResumingFromAMalformedTrainerState()
    {
        string corpus = _dir.File("corpus.jsonl", string.Concat(Enumerable.Range(0, 20).Select(i => $"{{\"text\": \"The capital of country {i} is city {i}.\"}}\n")));
        string checkpoint = Path.Combine(_dir.Path, "checkpoint");
        string state = Path.Combine(checkpoint, "trainer_state.json");
        Directory.CreateDirectory(checkpoint);
        File.WriteAllText(state, "{\n  \"step\": 3,\n  \"total_steps\": 2\n  \"epoch\": 0\n}");
        string error = Fails("pretrain", "--corpus", corpus, "--tokenizer", BaseModel, "--preset", "tiny", "--out", Missing("run"), "--steps", "2",
            "--threads", "1", "--device", "cpu", "--block-size", "16", "--batch-size", "2", "--resume", checkpoint);
        Assert.StartsWith($"error: {state}:4: malformed trainer state (", error);
    }

    [Fact]
    public void FinetuneOnMalformedPairs()
    {
        string pairs = _dir.File("pairs.jsonl", "{\"question\": \"Q1\", \"answer\": \"A1\"}\n{\"question\": \"Q2\", \"answer\": \n");
        string error = Fails("finetune", "--pairs", pairs, "--base", BaseModel, "--out", Missing("run"), "--steps", "1");
        Assert.StartsWith($"error: {pairs}:2: ", error);
        Assert.Contains("malformed JSON", error);
    }

    [Fact]
    public void FinetuneFromAMissingBaseModel()
    {
        string pairs = _dir.File("pairs.jsonl", "{\"question\": \"Q1\", \"answer\": \"A1\"}\n{\"question\": \"Q2\", \"answer\": \"A2\"}\n");
        string model = Missing("base");
        string error = Fails("finetune", "--pairs", pairs, "--base", model, "--out", Missing("run"), "--steps", "1", "--threads", "1", "--device", "cpu");
        Assert.Contains(model, error);
        Assert.Contains("does not exist", error);
    }

    [Fact]
    public void EvaluateAMissingModel()
    {
        string pairs = _dir.File("pairs.jsonl", "{\"question\": \"Q1\", \"answer\": \"A1\"}\n");
        string model = Missing("model");
        string error = Fails("evaluate", "--pairs", pairs, "--model", model);
        Assert.Contains(model, error);
        Assert.Contains("does not exist", error);
    }

    [Fact]
    public void EvaluateAMissingPairsFile()
    {
        string pairs = Missing("pairs.jsonl");
        string error = Fails("evaluate", "--pairs", pairs, "--model", BaseModel, "--max-new-tokens", "1");
        Assert.Contains(pairs, error);
        Assert.Contains("does not exist", error);
    }

    [Fact]
    public void ExportAMissingModelFolder()
    {
        string model = Missing("model");
        string error = Fails("export", model);
        Assert.Contains(model, error);
        Assert.Contains("does not exist", error);
    }

    [Fact]
    public void ExportAModelWithAMalformedConfig()
    {
        string model = Path.Combine(_dir.Path, "model");
        Directory.CreateDirectory(model);
        foreach (string file in Directory.GetFiles(BaseModel)) File.Copy(file, Path.Combine(model, Path.GetFileName(file)));
        string config = Path.Combine(model, "config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"hidden_size\": ", "\"hidden_size\": \"wide\", \"x\": "));
        Assert.StartsWith($"error: {config}:", Fails("export", model, "--out", Missing("onnx")));
        Assert.Contains("malformed config", Fails("export", model, "--out", Missing("onnx")));
    }

    [Fact]
    public void ExportWithBadQuantizationSettings()
    {
        string onnx = Missing("onnx");
        // Usage errors, which System.CommandLine reports with the command's help.
        foreach (var (args, message) in new[]
        {
            (new[] { "--calibration", BaseModel }, "--calibration chooses how weights are quantized; add --quantize int4 or int8."),
            (["--quantize", "int3"], "'int3' not recognized"),
        })
        {
            var (code, _, stderr) = CliRunner.Run(["export", BaseModel, "--out", onnx, .. args]);
            Assert.True(code != 0 && stderr.Contains(message, StringComparison.Ordinal), stderr);
        }
        Assert.Equal("error: The quantization block size must be a power of two of at least 16, not 48.", Fails("export", BaseModel, "--out", onnx, "--quantize", "int4", "--block-size", "48"));
        string empty = Path.Combine(_dir.Path, "empty.txt");
        File.WriteAllText(empty, "");
        Assert.Equal($"error: {empty}: the corpus has no documents (1 file(s), all empty or blank)", Fails("export", BaseModel, "--out", onnx, "--quantize", "int4", "--calibration", empty));
        string pairs = Path.Combine(_dir.Path, "pairs.jsonl");
        File.WriteAllText(pairs, "{\"question\": \"What is the capital of Peru?\"}\n");
        Assert.StartsWith($"error: {pairs}:1: no 'text' field", Fails("export", BaseModel, "--out", onnx, "--quantize", "int4", "--calibration", pairs));
        Assert.False(Directory.Exists(onnx));
    }

    [Fact]
    public void ChatWithAMissingFolder()
    {
        string folder = Missing("onnx");
        Assert.Equal($"error: Exported model folder '{folder}' does not exist.", Fails("chat", folder, "--provider", "cpu"));
    }

    [Fact]
    public void ChatWithAFolderThatWasNotExported()
    {
        string error = Fails("chat", BaseModel, "--provider", "cpu");
        Assert.Equal($"error: '{BaseModel}' has no model.onnx; export a model directory first (OnnxExporter.Export or `mlnet-finetune export`).", error);
    }
}
