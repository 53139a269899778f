using System.Diagnostics;
using System.Text.Json;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.PairGathering;
using MLNetFinetune.Server;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.Cli;

/// <summary>
/// A tiny teacher: random weights finetuned for a few seconds to answer "Tell me about item N." with a short word and end
/// of text, so its answers end before the token limit (an answer cut at the limit is rejected as too long), exported to ONNX.
/// </summary>
public sealed class TinyTeacher : IDisposable
{
    readonly TempDirectory _dir = new();

    public TinyTeacher()
    {
        string[] words = ["red", "green", "blue", "amber", "violet", "white", "black", "silver", "gold", "ivory", "olive", "teal"];
        var ml = new MLContext(seed: 0);
        var df = new DataFrame(
            new StringDataFrameColumn("question", words.Select((_, i) => $"Tell me about item {i}.")),
            new StringDataFrameColumn("answer", words));
        var pairs = ml.Transforms.Text.ApplyPromptTemplate("Prompt", PromptTemplates.QuestionAnswer.Prompt)
            .Append(ml.Transforms.Text.ApplyPromptTemplate("Response", "\n{answer}")).Fit(df).Transform(df);
        string baseModel = Path.Combine(_dir.Path, "base");
        manual_seed(6);
        using (var lm = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320))) HfCheckpoint.Save(lm, TestTokenizers.Small(320, [.. words]), baseModel);
        using (ml.CausalLM().Trainers.InstructionTune(new InstructionTuningOptions
        {
            BaseModel = baseModel, OutputDirectory = Path.Combine(_dir.Path, "tuned"), BlockSize = 64, MicroBatchSize = 4, MaxSteps = 150,
            LearningRate = 5e-3, MinLearningRate = 5e-4, WarmupSteps = 5, WeightDecay = 0, EvalFraction = 0, Threads = 1, Device = "cpu", ShuffleBuffer = 1,
        }).Fit(pairs)) { }
        Folder = OnnxExporter.Export(Path.Combine(_dir.Path, "tuned", "model"), new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "onnx") });
    }

    public string Folder { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary><c>pairs try|generate|score</c> end to end on a tiny exported model (<c>--local</c>, and served), in-process and as a process killed mid-run.</summary>
[Collection(TorchCollection.Name)]
public class PairsCommandTests(TinyTeacher teacher) : IClassFixture<TinyTeacher>, IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    string ExportedModel() => teacher.Folder;

    string Inputs(int count) => _dir.File("inputs.jsonl", string.Concat(Enumerable.Range(0, count).Select(i => JsonSerializer.Serialize(new { topic = $"item {i}" }) + "\n")));

    [Fact]
    public void TriesAPromptGeneratesPairsAndScoresTheModelOnThem()
    {
        string onnx = ExportedModel(), inputs = Inputs(12), pairs = Path.Combine(_dir.Path, "pairs.jsonl");
        string[] model = ["--local", onnx, "--threads", "1", "--max-tokens", "8"];

        string tried = CliRunner.Succeeds("", ["pairs", "try", "--inputs", inputs, "--template", "Tell me about {topic}.", "-n", "2", .. model]);
        Assert.StartsWith("[0] input:\n    Tell me about item 0.\n    output:\n    ", tried);
        Assert.Contains("[1] input:\n    Tell me about item 1.\n", tried);
        Assert.DoesNotContain("[2]", tried);

        string generated = CliRunner.Succeeds("", ["pairs", "generate", "--inputs", inputs, "--prompt", "Tell me about {topic}.", "--out", pairs, "--concurrency", "2", .. model]);
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

    // Against the folder loaded in the process (--local), and served over the OpenAI API by `serve` (--endpoint), as a
    // teacher usually is.
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task ARunKilledMidwayAndRerunEndsWithTheSameFileAsAnUninterruptedRun(bool served)
    {
        string onnx = ExportedModel(), inputs = Inputs(served ? 1000 : 200);
        string whole = Path.Combine(_dir.Path, "whole.jsonl"), killed = Path.Combine(_dir.Path, "killed.jsonl");
        await using var server = served ? await OpenAIServer.StartAsync(new ServerOptions { Folder = onnx, Port = 0, Provider = "cpu", Threads = 1 }) : null;
        string[] model = server != null ? ["--endpoint", new Uri(server.Address, "/v1").ToString(), "--model", server.ModelId] : ["--local", onnx, "--threads", "1"];
        string[] Generate(string output) => ["pairs", "generate", .. model, "--max-tokens", "24", "--concurrency", "1",
            "--inputs", inputs, "--template", "Tell me about {topic}.", "--out", output];
        CliRunner.Succeeds("", Generate(whole));

        // The built CLI as a real process, killed (SIGKILL) once its first batch is on disk.
        var start = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "mlnet-finetune.dll"), .. Generate(killed)])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using (var process = Process.Start(start)!)
        {
            var said = new System.Text.StringBuilder();
            process.OutputDataReceived += (_, e) => { lock (said) said.AppendLine(e.Data); };
            process.ErrorDataReceived += (_, _) => { };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            var clock = Stopwatch.StartNew();
            while (!(File.Exists(killed) && File.ReadAllBytes(killed).Contains((byte)'\n')) && !process.HasExited && clock.Elapsed < TimeSpan.FromSeconds(60)) Thread.Sleep(5);
            Assert.False(process.HasExited, $"the run ended (exit code {(process.HasExited ? process.ExitCode : 0)}) before it could be killed: {said}");
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
        int before = File.ReadAllLines(killed).Length;
        Assert.InRange(before, 1, File.ReadAllLines(whole).Length - 1);

        string rerun = CliRunner.Succeeds("", Generate(killed));
        using var report = JsonDocument.Parse(rerun.TrimEnd().Split('\n')[^1]);
        Assert.True(report.RootElement.GetProperty("resumed").GetInt64() > 0, rerun);
        Assert.Equal(File.ReadAllBytes(whole), File.ReadAllBytes(killed));
        using var finished = JsonDocument.Parse(CliRunner.Succeeds("", Generate(whole)).TrimEnd().Split('\n')[^1]);
        Assert.Equal(served ? 1000 : 200, finished.RootElement.GetProperty("kept").GetInt64() + finished.RootElement.GetProperty("rejects").EnumerateObject().Sum(r => r.Value.GetInt64()));
        Assert.Equal(File.ReadAllBytes(whole + PairGatherer.LedgerSuffix), File.ReadAllBytes(killed + PairGatherer.LedgerSuffix));
    }
}
