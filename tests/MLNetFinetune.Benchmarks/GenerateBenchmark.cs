using System.Diagnostics;
using System.Text.Json;
using Microsoft.Data.Analysis;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Token generation on the pythia-70m shape (random weights), batch 1, CPU, 256 new tokens after a 16-token prompt, in
/// one run: ONNX Runtime with the KV cache; ONNX Runtime GenAI on the same exported folder (a child process, since GenAI
/// brings its own ONNX Runtime); TorchSharp with the KV cache (the decode loop's session) and without (the full sequence
/// every step); and the cached per-token latency at position 512 against position 16. ORT runs twice, side by side: the
/// plain path and steps through an OrtIoBinding that keeps the cache in the provider's memory. With --quantize int4,int8
/// (one or both) the same weights are exported quantized too and timed in turns with float32 (tokens/s and file size).
/// Options: --new N (256), --threads N, --provider cpu|cuda|auto, --quantize int4[,int8], --block-size N, --no-genai.
/// </summary>
static class GenerateBenchmark
{
    /// <summary>
    /// Saves <paramref name="model"/> (random weights) with a small tokenizer in <paramref name="dir"/> and exports it to
    /// <c>dir/onnx</c>, once: a later run loads the saved weights into <paramref name="model"/> instead. Returns the export.
    /// </summary>
    public static string SaveAndExport(TransformerForCausalLM model, string dir)
    {
        if (!File.Exists(Path.Combine(dir, "onnx", OnnxExporter.ModelFile)))
        {
            var tokenizer = BpeTrainer.Train(new DataFrame(new StringDataFrameColumn("Text", ["a tokenizer for the benchmark, any will do"])), new BpeTrainerOptions { VocabSize = 300 });
            HfCheckpoint.Save(model, tokenizer, dir);
            OnnxExporter.Export(dir);
        }
        else HfCheckpoint.LoadWeights(model, dir);
        return Path.Combine(dir, "onnx");
    }

    public static Task<int> RunAsync(string[] args)
    {
        int newTokens = BenchmarkArgs.Int(args, "--new", 256);
        var (threads, _) = BenchmarkArgs.Torch(args);
        string provider = BenchmarkArgs.Value(args, "--provider") ?? "cpu";
        string dir = Path.Combine(BenchmarkArgs.TempDir(args), "generate-pythia-70m");
        var config = ModelConfig.Preset("pythia-70m");
        manual_seed(0);
        using var model = new TransformerForCausalLM(config);
        model.eval();
        SaveAndExport(model, dir);

        using var ort = OnnxCausalLM.Load(Path.Combine(dir, "onnx"), provider, ioBinding: false);
        Console.WriteLine($"pythia-70m shape, {config.ParameterCount():N0} parameters; ORT provider {ort.Provider}; {threads} threads");
        long[] prompt = Enumerable.Range(0, 16).Select(i => (long)(i * 37 % 300)).ToArray();

        // With --quantize, the same weights exported quantized (afresh: the exporter may have changed) and timed in turns
        // with float32, three rounds each, before anything else loads: this machine's speed drifts by tens of percent
        // within a minute, and turns expose each export to the same drift.
        var quantizations = (BenchmarkArgs.Value(args, "--quantize") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)
            .Select(name => WeightQuantization.Parse(name)!)
            .Select(q => q with { BlockSize = BenchmarkArgs.Int(args, "--block-size", q.BlockSize) }).ToArray();
        var quantizedFolders = quantizations.Select(q => OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(dir, $"onnx-{q}-{q.BlockSize}"), Quantization = q })).ToArray();
        var quantizedTimings = new (double TokensPerSecond, double At16, double At512)[quantizations.Length];
        (double TokensPerSecond, double At16, double At512) ortTiming = default;
        if (quantizations.Length > 0)
        {
            var sessions = quantizedFolders.Select(f => OnnxCausalLM.Load(f, provider, ioBinding: false)).ToArray();
            const int rounds = 3;
            static (double, double, double) Add((double A, double B, double C) sum, (double A, double B, double C) x) => (sum.A + x.A / rounds, sum.B + x.B / rounds, sum.C + x.C / rounds);
            for (int round = 0; round < rounds; round++)
            {
                var f = TimeOrt(ort, prompt, newTokens, config.VocabSize);
                ortTiming = Add(ortTiming, f);
                Console.Write($"round {round + 1}: float32 {f.TokensPerSecond:N1} tokens/s");
                for (int i = 0; i < sessions.Length; i++)
                {
                    var q = TimeOrt(sessions[i], prompt, newTokens, config.VocabSize);
                    quantizedTimings[i] = Add(quantizedTimings[i], q);
                    Console.Write($", {quantizations[i]} {q.TokensPerSecond:N1} ({q.TokensPerSecond / f.TokensPerSecond:F2}×)");
                }
                Console.WriteLine();
            }
            foreach (var session in sessions) session.Dispose();
        }
        else ortTiming = TimeOrt(ort, prompt, newTokens, config.VocabSize);
        var (ortTokensPerSecond, at16, at512) = ortTiming;
        Console.WriteLine($"ORT (KV cache): {ortTokensPerSecond:N1} tokens/s; per-token latency {at16:F2} ms at position 16, {at512:F2} ms at 512");
        double boundTokensPerSecond, bound16, bound512;
        using (var bound = OnnxCausalLM.Load(Path.Combine(dir, "onnx"), provider, ioBinding: true))
            (boundTokensPerSecond, bound16, bound512) = TimeOrt(bound, prompt, newTokens, config.VocabSize);
        Console.WriteLine($"ORT (KV cache, IoBinding): {boundTokensPerSecond:N1} tokens/s; per-token latency {bound16:F2} ms at position 16, {bound512:F2} ms at 512");

        // TorchSharp with the cache, through the session the shared decode loop drives.
        IDecoderModel torch = new TorchCausalLM(model, ort.Tokenizer);
        double torchCachedTokensPerSecond;
        using (var session = torch.Start(1, 16 + newTokens + 1))
        {
            var stepLogits = session.Step(prompt, Enumerable.Range(0, 16).Select(i => (long)i).ToArray(), Enumerable.Repeat(1L, 16).ToArray(), 1);
            var cachedClock = Stopwatch.StartNew();
            for (int position = 16; position < 16 + newTokens; position++)
                stepLogits = session.Step([ArgMax(stepLogits, 0, config.VocabSize)], [position], Enumerable.Repeat(1L, position + 1).ToArray(), 1);
            torchCachedTokensPerSecond = newTokens / cachedClock.Elapsed.TotalSeconds;
        }
        Console.WriteLine($"TorchSharp (KV cache): {torchCachedTokensPerSecond:N1} tokens/s");

        // TorchSharp without a cache: every step runs the whole sequence so far.
        var ids = prompt.ToList();
        var torchClock = Stopwatch.StartNew();
        using (no_grad())
        {
            for (int i = 0; i < newTokens; i++)
            {
                using var scope = NewDisposeScope();
                var output = model.forward(tensor(ids.ToArray(), [1, ids.Count]));
                ids.Add(output[0, -1].argmax().item<long>());
            }
        }
        double torchTokensPerSecond = newTokens / torchClock.Elapsed.TotalSeconds;
        Console.WriteLine($"TorchSharp (no cache): {torchTokensPerSecond:N1} tokens/s");

        double? genai = args.Contains("--no-genai") ? null : GenAiTokensPerSecond(Path.Combine(dir, "onnx"), newTokens, prompt);
        if (genai != null) Console.WriteLine($"ONNX Runtime GenAI: {genai:N1} tokens/s");

        var quantized = new List<object>();
        double fp32Bytes = OnnxExporter.SizeOf(Path.Combine(dir, "onnx"));
        for (int i = 0; i < quantizations.Length; i++)
        {
            var (q, (qTokensPerSecond, q16, q512)) = (quantizations[i], quantizedTimings[i]);
            double qBytes = OnnxExporter.SizeOf(quantizedFolders[i]);
            Console.WriteLine($"ORT {q}, blocks of {q.BlockSize} (KV cache): {qTokensPerSecond:N1} tokens/s ({qTokensPerSecond / ortTokensPerSecond:F2}× float32); per-token latency {q16:F2} ms at 16, {q512:F2} ms at 512; " +
                $"file {qBytes / 1e6:N1} MB ({qBytes / fp32Bytes:F3}× float32's {fp32Bytes / 1e6:N1} MB)");
            double? qGenai = args.Contains("--no-genai") ? null : GenAiTokensPerSecond(quantizedFolders[i], newTokens, prompt);
            // GenAI runs alone in its process; so does this second measurement of ours, for a like-for-like comparison.
            double alone = AloneTokensPerSecond(quantizedFolders[i], newTokens, provider);
            Console.WriteLine($"ORT {q}, alone in a process: {alone:N1} tokens/s" + (qGenai != null ? $"; ONNX Runtime GenAI, {q}: {qGenai:N1} tokens/s" : ""));
            quantized.Add(new
            {
                quantization = q.ToString(), block_size = q.BlockSize, accuracy_level = q.AccuracyLevel,
                tokens_per_s = Math.Round(qTokensPerSecond, 1), vs_fp32 = Math.Round(qTokensPerSecond / ortTokensPerSecond, 2),
                latency_ms_16 = Math.Round(q16, 3), latency_ms_512 = Math.Round(q512, 3),
                file_mb = Math.Round(qBytes / 1e6, 1), fp32_file_mb = Math.Round(fp32Bytes / 1e6, 1), file_vs_fp32 = Math.Round(qBytes / fp32Bytes, 3),
                alone_tokens_per_s = Math.Round(alone, 1),
                genai_tokens_per_s = qGenai is { } qg ? Math.Round(qg, 1) : (double?)null,
            });
        }

        Console.WriteLine(JsonSerializer.Serialize(new
        {
            benchmark = "generate",
            shape = "pythia-70m",
            provider = ort.Provider,
            threads,
            new_tokens = newTokens,
            ort_tokens_per_s = Math.Round(ortTokensPerSecond, 1),
            ort_iobinding_tokens_per_s = Math.Round(boundTokensPerSecond, 1),
            iobinding_vs_plain = Math.Round(boundTokensPerSecond / ortTokensPerSecond, 3),
            iobinding_latency_ms_16 = Math.Round(bound16, 3),
            iobinding_latency_ms_512 = Math.Round(bound512, 3),
            torchsharp_nocache_tokens_per_s = Math.Round(torchTokensPerSecond, 1),
            speedup = Math.Round(ortTokensPerSecond / torchTokensPerSecond, 2),
            torchsharp_cache_tokens_per_s = Math.Round(torchCachedTokensPerSecond, 1),
            torch_cache_speedup = Math.Round(torchCachedTokensPerSecond / torchTokensPerSecond, 2),
            genai_tokens_per_s = genai is { } g ? Math.Round(g, 1) : (double?)null,
            ort_vs_genai = genai is { } h ? Math.Round(ortTokensPerSecond / h, 2) : (double?)null,
            latency_ms_16 = Math.Round(at16, 3),
            latency_ms_512 = Math.Round(at512, 3),
            latency_ratio_512_vs_16 = Math.Round(at512 / at16, 3),
            quantized,
        }));
        return Task.FromResult(0);
    }

    // ORT with the cache, through the session the shared decode loop steps (its logits array reused, the previous
    // cache released in the step): prefill, then one token per step up to position 16 + max(newTokens, 512) + 8; the
    // second of two passes is timed (GenAI's run gets a warm-up generation too). Returns tokens/s over the first
    // newTokens and the mean per-token latency at positions 16–23 and 512–519.
    static (double TokensPerSecond, double At16, double At512) TimeOrt(OnnxCausalLM ort, long[] prompt, int newTokens, int vocab)
    {
        int last = Math.Max(16 + newTokens, 520);
        var latency = new double[last + 1];
        double firstNew = 0;
        for (int pass = 0; pass < 2; pass++)
        {
            using var session = ((IDecoderModel)ort).Start(1, last + 1);
            var logits = session.Step(prompt, Enumerable.Range(0, 16).Select(i => (long)i).ToArray(), Enumerable.Repeat(1L, 16).ToArray(), 1);
            var clock = new Stopwatch();
            firstNew = 0;
            for (int position = 16; position < last; position++)
            {
                long next = ArgMax(logits, 0, vocab);
                clock.Restart();
                logits = session.Step([next], [position], Enumerable.Repeat(1L, position + 1).ToArray(), 1);
                latency[position] = clock.Elapsed.TotalMilliseconds;
                if (position < 16 + newTokens) firstNew += latency[position];
            }
        }
        return (newTokens / (firstNew / 1000), latency[16..24].Average(), latency[512..520].Average());
    }

    /// <summary>
    /// <c>decode FOLDER [--new N] [--provider P]</c>: our generator on an exported folder, alone in this process, timed
    /// as the generate benchmark times it (the generate benchmark runs it as a child process).
    /// </summary>
    public static Task<int> DecodeAloneAsync(string[] args)
    {
        using var ort = OnnxCausalLM.Load(args[0], BenchmarkArgs.Value(args, "--provider") ?? "cpu", ioBinding: false);
        long[] prompt = Enumerable.Range(0, 16).Select(i => (long)(i * 37 % 300)).ToArray();
        var (tokensPerSecond, _, _) = TimeOrt(ort, prompt, BenchmarkArgs.Int(args, "--new", 256), ort.Config.VocabSize);
        Console.WriteLine(JsonSerializer.Serialize(new { tokens_per_s = Math.Round(tokensPerSecond, 1) }));
        return Task.FromResult(0);
    }

    static double AloneTokensPerSecond(string folder, int newTokens, string provider) => FromChild("The decode benchmark",
        ["dotnet", Path.Combine(AppContext.BaseDirectory, "MLNetFinetune.Benchmarks.dll"), "decode", folder, "--new", newTokens.ToString(), "--provider", provider], "tokens_per_s");

    // Runs tests/MLNetFinetune.GenAI.Benchmark on the folder with the same prompt and reads its JSON line.
    static double GenAiTokensPerSecond(string folder, int newTokens, long[] prompt) => FromChild("The GenAI benchmark",
        ["dotnet", "run", "-c", "Release", "--project", Path.Combine(BenchmarkArgs.RepositoryRoot(), "tests", "MLNetFinetune.GenAI.Benchmark"), "--",
            folder, newTokens.ToString(), .. prompt.Select(p => p.ToString())], "genai_tokens_per_s");

    // Runs a benchmark alone in a child process and reads one number from the JSON object on its last line.
    static double FromChild(string what, string[] command, string property)
    {
        string output = CliProcess.Output(new ProcessStartInfo(command[0], command[1..]), what);
        using var json = JsonDocument.Parse(output.Trim().Split('\n')[^1]);
        return json.RootElement.GetProperty(property).GetDouble();
    }

    static long ArgMax(float[] values, int offset, int count)
    {
        int best = offset;
        for (int i = offset + 1; i < offset + count; i++) if (values[i] > values[best]) best = i;
        return best - offset;
    }
}
