using System.Diagnostics;
using System.Text.Json;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.PairGathering;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.Cli;

/// <summary><c>pairs try|generate|score</c> end to end on a tiny exported model (<c>--local</c>), in-process and as a process killed mid-run.</summary>
[Collection(TorchCollection.Name)]
public class PairsCommandTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    // A tiny random model exported to ONNX: its greedy answers are nonsense, but the same nonsense on every run.
    string ExportedModel()
    {
        manual_seed(6);
        string model = Path.Combine(_dir.Path, "model");
        using (var lm = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320))) HfCheckpoint.Save(lm, TestTokenizers.Small(), model);
        return OnnxExporter.Export(model, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "onnx") });
    }

    string Inputs(int count) => _dir.File("inputs.jsonl", string.Concat(Enumerable.Range(0, count).Select(i => JsonSerializer.Serialize(new { topic = $"item {i}" }) + "\n")));

    [Fact]
    public void TriesAPromptGeneratesPairsAndScoresTheModelOnThem()
    {
        string onnx = ExportedModel(), inputs = Inputs(12), pairs = Path.Combine(_dir.Path, "pairs.jsonl");
        string[] model = ["--local", onnx, "--threads", "1", "--max-tokens", "4"];

        string tried = CliRunner.Succeeds("", ["pairs", "try", "--inputs", inputs, "--template", "What is {topic}?", "-n", "2", .. model]);
        Assert.StartsWith("[0] input:\n    What is item 0?\n    output:\n    ", tried);
        Assert.Contains("[1] input:\n    What is item 1?\n", tried);
        Assert.DoesNotContain("[2]", tried);

        string generated = CliRunner.Succeeds("", ["pairs", "generate", "--inputs", inputs, "--prompt", "What is {topic}?", "--out", pairs, "--concurrency", "2", .. model]);
        using var report = JsonDocument.Parse(generated.TrimEnd().Split('\n')[^1]);
        long kept = report.RootElement.GetProperty("kept").GetInt64();
        Assert.Equal(12, kept + report.RootElement.GetProperty("rejects").EnumerateObject().Sum(r => r.Value.GetInt64()));
        Assert.Equal(12, report.RootElement.GetProperty("inputs").GetInt64());
        Assert.Contains("pairs: 8/12 inputs,", generated); // a progress line per batch when the output is not a terminal
        var frame = InstructionData.Load(pairs);
        Assert.Equal(kept, frame.Rows.Count);
        Assert.Equal(["question", "answer"], frame.Columns.Select(c => c.Name));
        Assert.True(kept >= 3, $"only {kept} pairs kept: {generated}");

        // Asked again with the same settings, the model gives the answers it gave: every sampled pair matches.
        string scored = CliRunner.Succeeds("", ["pairs", "score", "--pairs", pairs, "-n", "3", .. model]);
        Assert.StartsWith("exact match 100.0% (3/3, 95% CI", scored);

        var (code, _, error) = CliRunner.Run("pairs", "generate", "--inputs", inputs, "--out", pairs);
        Assert.Equal(1, code);
        Assert.Equal("error: Give the model as --endpoint URL --model NAME or as --local FOLDER (one of them).", error.TrimEnd());
        (code, _, error) = CliRunner.Run("pairs", "score", "--pairs", pairs, "--endpoint", "http://localhost:1/v1");
        Assert.Equal("error: --endpoint needs --model NAME (the model to ask at that endpoint).", error.TrimEnd());
    }

    [Fact]
    public void ARunKilledMidwayAndRerunEndsWithTheSameFileAsAnUninterruptedRun()
    {
        string onnx = ExportedModel(), inputs = Inputs(200);
        string whole = Path.Combine(_dir.Path, "whole.jsonl"), killed = Path.Combine(_dir.Path, "killed.jsonl");
        string[] Generate(string output) => ["pairs", "generate", "--local", onnx, "--threads", "1", "--max-tokens", "24", "--concurrency", "1",
            "--inputs", inputs, "--template", "Tell me about {topic}.", "--out", output];
        CliRunner.Succeeds("", Generate(whole));

        // The built CLI as a real process, killed (SIGKILL) once its first batch is on disk.
        var start = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "mlnet-finetune.dll"), .. Generate(killed)])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using (var process = Process.Start(start)!)
        {
            process.OutputDataReceived += (_, _) => { };
            process.ErrorDataReceived += (_, _) => { };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var clock = Stopwatch.StartNew();
            while (!(File.Exists(killed) && File.ReadAllBytes(killed).Contains((byte)'\n')) && !process.HasExited && clock.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(5);
            Assert.False(process.HasExited, $"the run ended (exit code {(process.HasExited ? process.ExitCode : 0)}) before it could be killed");
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        int before = File.ReadAllLines(killed).Length;
        Assert.InRange(before, 1, File.ReadAllLines(whole).Length - 1);

        string rerun = CliRunner.Succeeds("", Generate(killed));
        using var report = JsonDocument.Parse(rerun.TrimEnd().Split('\n')[^1]);
        Assert.True(report.RootElement.GetProperty("resumed").GetInt64() > 0, rerun);
        Assert.Equal(File.ReadAllBytes(whole), File.ReadAllBytes(killed));
        Assert.Equal(File.ReadAllBytes(whole + PairGatherer.LedgerSuffix), File.ReadAllBytes(killed + PairGatherer.LedgerSuffix));
    }
}
