using MLNetFinetune.Cli;

namespace MLNetFinetune.Tests.Cli;

/// <summary>The command line's whole path on tiny settings: pretrain → finetune → evaluate → export → generate.</summary>
[Collection(TorchCollection.Name)]
public class EndToEndCliTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    string Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = CliApp.Run(args, output, error);
        Assert.True(code == 0, $"`{string.Join(' ', args)}` failed: {error}");
        return output.ToString();
    }

    [Fact]
    public void PretrainFinetuneEvaluateExportGenerate()
    {
        string docs = RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl");
        string tiny = "--threads 1 --device cpu --block-size 64 --batch-size 4 --eval-fraction 0.1";
        string pretrained = Path.Combine(_dir.Path, "base"), tuned = Path.Combine(_dir.Path, "tuned");

        string pretrain = Run(["pretrain", "--corpus", RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst"), "--vocab-size", "300",
            "--preset", "tiny", "--out", pretrained, "--steps", "20", "--lr", "3e-3", .. tiny.Split(' ')]);
        Assert.Contains("step 20/20", pretrain);
        Assert.True(File.Exists(Path.Combine(pretrained, "metrics.csv")));

        string finetune = Run(["finetune", "--pairs", docs, "--base", Path.Combine(pretrained, "model"), "--out", tuned, "--steps", "20", "--lr", "3e-3",
            "--lora-rank", "4", .. tiny.Split(' ')]);
        Assert.Contains("model written to", finetune);
        Assert.True(File.Exists(Path.Combine(tuned, "adapter", "adapter_config.json")));

        string report = Path.Combine(_dir.Path, "compare.md");
        string evaluate = Run(["evaluate", "--pairs", docs, "--model", Path.Combine(tuned, "model"), "--base", Path.Combine(pretrained, "model"),
            "--max-new-tokens", "8", "--report", report]);
        Assert.Contains("exact match", evaluate);
        Assert.True(File.Exists(report) && File.Exists(Path.ChangeExtension(report, ".csv")));

        Run(["export", Path.Combine(tuned, "model")]);
        string generated = Run(["generate", Path.Combine(tuned, "model", "onnx"), "-p", "### Question:\nWhat is MLNetFinetune?\n\n### Answer:", "--max-new-tokens", "5", "--provider", "cpu"]);
        Assert.False(string.IsNullOrWhiteSpace(generated.Replace("\n", "x")));
    }
}
