using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Loading a published-shape folder: the independent Llama reference (tests/reference/llama_reference.py) writes a
/// random model of the shape in BF16 over three shards with its logits; we load it tensor by tensor and report the
/// peak resident memory against the float32 model's size, the load time and the logits' largest difference.
/// Options: --shape qwen2.5-0.5b (default; any Llama-family preset), --python PATH.
/// </summary>
static class LoadBenchmark
{
    public static Task<int> RunAsync(string[] args)
    {
        string shape = BenchmarkArgs.Value(args, "--shape") ?? "qwen2.5-0.5b";
        string python = BenchmarkArgs.Value(args, "--python") ?? "/usr/bin/python3";
        var config = ModelConfig.Preset(shape);
        if (config.IsGptNeoX) throw new ArgumentException("The load benchmark writes its folder with the Llama reference: give a Llama-family preset.");
        string dir = Path.Combine(BenchmarkArgs.TempDir(args), $"load-{shape}");
        long[][] ids = [[1, 5, 9, 200, 31, 7, 44, 120, 3, 250]];
        var configJson = config.ToJson();
        var cases = new JsonArray(new JsonObject
        {
            ["dir"] = dir, ["seed"] = 1, ["dtype"] = "bfloat16", ["shards"] = 3, ["ids"] = JsonSerializer.SerializeToNode(ids), ["config"] = configJson,
        });
        Directory.CreateDirectory(dir);
        string casesPath = Path.Combine(dir, "cases.json");
        File.WriteAllText(casesPath, cases.ToJsonString());
        var clock = Stopwatch.StartNew();
        if (!File.Exists(Path.Combine(dir, "reference_logits.f32"))) // a folder of an earlier run is reused: writing takes minutes
        {
            using var process = Process.Start(new ProcessStartInfo(python, [Path.Combine(BenchmarkArgs.RepositoryRoot(), "tests", "reference", "llama_reference.py"), "write", casesPath]))!;
            process.WaitForExit();
            if (process.ExitCode != 0) throw new InvalidOperationException($"llama_reference.py write failed ({process.ExitCode}).");
            Console.WriteLine($"reference wrote {shape} (BF16, 3 shards) in {clock.Elapsed.TotalSeconds:F0} s");
        }
        // The reference knows no tokenizer; loading needs one that fits the vocabulary.
        BpeTrainer.Train(new Microsoft.Data.Analysis.DataFrame(new Microsoft.Data.Analysis.StringDataFrameColumn("Text", ["a small text for a small tokenizer"])),
            new BpeTrainerOptions { VocabSize = 300 }).Save(dir);

        long float32Bytes = 4 * config.ParameterCount();
        GC.Collect();
        ProcessMemory.ResetPeak();
        double before = ProcessMemory.PeakRssMb();
        clock.Restart();
        var (model, _) = HfCheckpoint.Load(dir, CPU);
        double seconds = clock.Elapsed.TotalSeconds;
        double peak = ProcessMemory.PeakRssMb() - before;
        Console.WriteLine($"loaded in {seconds:F1} s; peak RSS +{peak:N0} MiB for a {float32Bytes / 1048576.0:N0} MiB float32 model");

        using (model)
        using (no_grad())
        {
            model.eval();
            using var logits = model.forward(tensor(ids[0], [1, ids[0].Length]));
            float[] ours = logits.data<float>().ToArray();
            byte[] bytes = File.ReadAllBytes(Path.Combine(dir, "reference_logits.f32"));
            float[] reference = new float[bytes.Length / 4];
            Buffer.BlockCopy(bytes, 0, reference, 0, bytes.Length);
            double diff = ours.Zip(reference, (a, b) => Math.Abs(a - b)).Max();
            Console.WriteLine(JsonSerializer.Serialize(new
            {
                benchmark = "load", shape, parameters = config.ParameterCount(), load_s = Math.Round(seconds, 1),
                peak_rss_mib = Math.Round(peak), float32_mib = Math.Round(float32Bytes / 1048576.0), peak_over_model = Math.Round(peak * 1048576.0 / float32Bytes, 2),
                reference_logits_max_abs_diff = diff,
            }));
        }
        return Task.FromResult(0);
    }
}
