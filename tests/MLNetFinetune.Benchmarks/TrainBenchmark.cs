using System.Diagnostics;
using System.Text.Json;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Training throughput of the model against the machine's matmul ceiling and against the PyTorch reference of its
/// family (tests/reference, Debian's python3-torch; run setup.sh once), in one run. Default shape: GPT-NeoX, 4 layers,
/// d_model 256, 4 heads, vocab 4096, block 128, batch 8, AdamW. Options: --shape pythia-160m or smollm2-135m (any preset), --steps N (40), --block N (128), --batch N (8), --device cpu|cuda,
/// --threads N (default: all cores), --dtype float32|bfloat16 (mixed precision; the PyTorch reference stays float32),
/// --optimizer per-parameter|flat (TorchSharp's AdamW, the default, or FlatAdamW), --world N (data parallel over mpirun
/// instead: <see cref="DataParallelBenchmark"/>), --python PATH (the reference's interpreter; default Debian's /usr/bin/python3). Also checks that the reference reads our model.safetensors and gives the same logits.
/// </summary>
static class TrainBenchmark
{
    public static Task<int> RunAsync(string[] args)
    {
        if (BenchmarkArgs.Value(args, "--world") != null) return DataParallelBenchmark.RunAsync(args);
        string shape = BenchmarkArgs.Value(args, "--shape") ?? "small";
        string optimizerKind = BenchmarkArgs.Value(args, "--optimizer") ?? "per-parameter";
        if (optimizerKind is not ("per-parameter" or "flat")) throw new ArgumentException($"--optimizer must be per-parameter or flat (got {optimizerKind}).");
        int steps = BenchmarkArgs.Int(args, "--steps", 40);
        Python = BenchmarkArgs.Value(args, "--python") ?? Python;
        var (threads, device) = BenchmarkArgs.Torch(args);
        int block = BenchmarkArgs.Int(args, "--block", 128), batch = BenchmarkArgs.Int(args, "--batch", 8);
        var config = shape == "small"
            ? new ModelConfig { VocabSize = 4096, HiddenSize = 256, NumHiddenLayers = 4, NumAttentionHeads = 4, IntermediateSize = 1024, MaxPositionEmbeddings = 2048 }
            : ModelConfig.Preset(shape);
        Console.WriteLine($"shape {shape}: {config.ParameterCount():N0} parameters, device {device.type}, {threads} threads");

        double gflops = MatmulGflops(device);
        Console.WriteLine($"fp32 2048² matmul: {gflops:F1} GFLOP/s");

        manual_seed(0);
        using var model = new TransformerForCausalLM(config);
        string dir = Path.Combine(BenchmarkArgs.TempDir(args), $"train-{shape}");
        double? maxDiff = ReferenceLogitsDiff(model, dir, config);
        model.to(device);
        string dtype = BenchmarkArgs.Value(args, "--dtype") ?? "float32";
        if (dtype is "bfloat16" or "bf16") model.ComputeType = ScalarType.BFloat16;

        var decay = model.parameters().Where(p => p.dim() >= 2).ToList();
        var noDecay = model.parameters().Where(p => p.dim() < 2).ToList();
        AdamW.ParamGroup[] groups = [new(decay, 3e-4, 0.9, 0.95, 1e-8, 0.1, false, false), new(noDecay, 3e-4, 0.9, 0.95, 1e-8, 0, false, false)];
        // Built after model.to(device): FlatAdamW makes the parameters views of its buffers.
        using var flat = optimizerKind == "flat" ? new FlatAdamW(groups, model.parameters()) : null;
        using var optimizer = flat == null ? optim.AdamW(groups) : null;
        var data = randint(0, config.VocabSize, [steps + 5, batch, block], dtype: int64, device: device);
        // Clipping, step and zero_grad alone: all of it on CPU; on CUDA only the host's dispatch (no synchronize), which is
        // what the flat optimizer saves there.
        var optimizerClock = new Stopwatch();
        void Step(int i)
        {
            using var scope = NewDisposeScope();
            var ids = data[i];
            model.Loss(ids, ids).backward();
            optimizerClock.Start();
            if (flat != null)
            {
                flat.ClipGradNorm(1.0);
                flat.step();
                flat.zero_grad();
            }
            else
            {
                nn.utils.clip_grad_norm_(model.parameters(), 1.0);
                optimizer!.step();
                optimizer.zero_grad();
            }
            optimizerClock.Stop();
        }
        model.train();
        for (int i = 0; i < 5; i++) Step(i);
        Synchronize(device);
        optimizerClock.Reset();
        var clock = Stopwatch.StartNew();
        for (int i = 5; i < steps + 5; i++) Step(i);
        Synchronize(device);
        double tokensPerSecond = (double)steps * batch * block / clock.Elapsed.TotalSeconds;
        long parameters = config.ParameterCount();
        double mfu = 6.0 * parameters * tokensPerSecond / (gflops * 1e9);
        double optimizerMs = optimizerClock.Elapsed.TotalMilliseconds / steps;
        Console.WriteLine($"TorchSharp ({optimizerKind} AdamW): {tokensPerSecond:N0} tokens/s, MFU {mfu:P1}, optimizer {optimizerMs:F1} ms/step");

        double? pytorch = PyTorchTokensPerSecond(config, dir, block, batch, steps, device.type == DeviceType.CUDA ? "cuda" : "cpu");
        var result = new
        {
            benchmark = "train",
            shape,
            parameters,
            layers = config.NumHiddenLayers,
            hidden = config.HiddenSize,
            block,
            batch,
            device = device.type.ToString().ToLowerInvariant(),
            dtype,
            optimizer = optimizerKind,
            threads,
            tokens_per_s = Math.Round(tokensPerSecond, 1),
            optimizer_ms_per_step = Math.Round(optimizerMs, 2),
            matmul_gflops = Math.Round(gflops, 1),
            mfu = Math.Round(mfu, 3),
            pytorch_tokens_per_s = pytorch is { } p ? Math.Round(p, 1) : (double?)null,
            ratio_vs_pytorch = pytorch is { } q ? Math.Round(tokensPerSecond / q, 3) : (double?)null,
            reference_logits_max_abs_diff = maxDiff,
        };
        Console.WriteLine(JsonSerializer.Serialize(result));
        return Task.FromResult(0);
    }

    static double MatmulGflops(Device device)
    {
        using var a = randn(2048, 2048, device: device);
        using var b = randn(2048, 2048, device: device);
        for (int i = 0; i < 5; i++) mm(a, b).Dispose();
        int reps = device.type == DeviceType.CUDA ? 200 : 10;
        double best = 0;
        for (int trial = 0; trial < 3; trial++) // the ceiling is the best the machine gives; background JIT and GC disturb single runs
        {
            Synchronize(device);
            var clock = Stopwatch.StartNew();
            for (int i = 0; i < reps; i++) mm(a, b).Dispose();
            Synchronize(device);
            best = Math.Max(best, reps * 2.0 * 2048 * 2048 * 2048 / clock.Elapsed.TotalSeconds / 1e9);
        }
        return best;
    }

    static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize();
    }

    // Saves the fresh model, asks the PyTorch reference for logits on fixed ids, and compares with ours.
    static double? ReferenceLogitsDiff(TransformerForCausalLM model, string dir, ModelConfig config)
    {
        Directory.CreateDirectory(dir);
        var tokenizer = TextTokenizer.Gpt2();
        SafeTensorsFile.WriteFloat32(Path.Combine(dir, ModelDirectory.WeightsFile),
            model.state_dict().Select(p => (p.Key, p.Value.shape, p.Value.detach().cpu().contiguous().data<float>().ToArray())));
        config.Save(Path.Combine(dir, ModelDirectory.ConfigFile));
        long[][] ids = [Enumerable.Range(0, 48).Select(i => (long)((i * 7919) % config.VocabSize)).ToArray(), Enumerable.Range(0, 48).Select(i => (long)((i * 104729 + 3) % config.VocabSize)).ToArray()];
        string idsPath = Path.Combine(dir, "ids.json"), outPath = Path.Combine(dir, "reference-logits.f32");
        File.WriteAllText(idsPath, JsonSerializer.Serialize(ids));
        if (!RunPython(config, ["logits", dir, idsPath, outPath], out string _)) return null;
        float[] reference = new float[new FileInfo(outPath).Length / 4];
        Buffer.BlockCopy(File.ReadAllBytes(outPath), 0, reference, 0, reference.Length * 4);
        model.eval();
        using var noGrad = no_grad();
        using var input = tensor(ids.SelectMany(r => r).ToArray(), [2, 48], dtype: int64);
        float[] ours = model.forward(input).contiguous().data<float>().ToArray();
        double diff = ours.Zip(reference, (a, b) => Math.Abs(a - b)).Max();
        Console.WriteLine($"reference logits: max |ours − PyTorch| = {diff:E2} over {ours.Length:N0} values");
        return diff;
    }

    // On CPU the reference runs at 1 and 2 torch threads and the faster counts (Debian's OpenBLAS threads GEMMs itself,
    // so one torch thread avoids oversubscription); on CUDA, once.
    static double? PyTorchTokensPerSecond(ModelConfig config, string dir, int block, int batch, int steps, string device)
    {
        string configPath = Path.Combine(dir, ModelDirectory.ConfigFile);
        config.Save(configPath);
        double? best = null;
        int[] threadCounts = device == "cuda" ? [1] : [1, 2];
        foreach (int threads in threadCounts.Where(t => t <= Environment.ProcessorCount))
        {
            if (!RunPython(config, ["train", configPath, block.ToString(), batch.ToString(), steps.ToString(), threads.ToString(), device], out string output)) return null;
            double value = JsonDocument.Parse(output.Trim().Split('\n')[^1]).RootElement.GetProperty("tokens_per_s").GetDouble();
            Console.WriteLine($"PyTorch {device} ({threads} thread{(threads > 1 ? "s" : "")}): {value:N0} tokens/s");
            best = Math.Max(best ?? 0, value);
        }
        return best;
    }

    // Debian's python3 (with python3-torch) by default; --python picks another (e.g. a GPU machine's own PyTorch).
    static string Python = "/usr/bin/python3";

    // The family's reference: gpt_neox_reference.py or llama_reference.py.
    static bool RunPython(ModelConfig config, string[] arguments, out string output)
    {
        string script = Path.Combine(BenchmarkArgs.RepositoryRoot(), "tests", "reference", config.IsGptNeoX ? "gpt_neox_reference.py" : "llama_reference.py");
        var info = new ProcessStartInfo(Python, [script, .. arguments]) { RedirectStandardOutput = true, RedirectStandardError = true };
        try
        {
            using var process = Process.Start(info)!;
            output = process.StandardOutput.ReadToEnd();
            string error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode == 0) return true;
            Console.WriteLine($"PyTorch reference skipped (run tests/MLNetFinetune.Benchmarks/setup.sh): {error.Trim().Split('\n')[^1]}");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Console.WriteLine($"PyTorch reference skipped: {e.Message}");
            output = "";
        }
        return false;
    }
}
