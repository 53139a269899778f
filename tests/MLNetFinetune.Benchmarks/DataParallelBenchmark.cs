using System.Diagnostics;
using System.Globalization;
using System.Text.Json;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// <c>train --world N</c>: data-parallel pretraining as users launch it, the CLI's <c>pretrain</c> alone (one process,
/// all cores) against <c>mpirun -np N</c> (the cores split between the ranks) and one process on one thread (the unit
/// of scaling), same shape, same global batch, same steps, on the bundled corpus. Reports tokens/s of each (the mean of the log intervals after the first, so start-up
/// is left out), the scaling, and the last losses (equal up to rounding). Options: --world N (2), --steps N (40),
/// --block N (128), --batch N (global, 8), --preset NAME (pythia-14m), --corpus PATH (a corpus or a token-shards folder).
/// </summary>
static class DataParallelBenchmark
{
    public static Task<int> RunAsync(string[] args)
    {
        int world = BenchmarkArgs.Int(args, "--world", 2), steps = BenchmarkArgs.Int(args, "--steps", 40);
        int block = BenchmarkArgs.Int(args, "--block", 128), batch = BenchmarkArgs.Int(args, "--batch", 8);
        int cores = Environment.ProcessorCount;
        if (batch % world != 0) throw new ArgumentException($"--batch {batch} (the global batch) must divide among {world} ranks.");
        string preset = BenchmarkArgs.Value(args, "--preset") ?? "pythia-14m";
        string root = BenchmarkArgs.RepositoryRoot();
        string corpus = BenchmarkArgs.Value(args, "--corpus") ?? Path.Combine(root, "examples", "data", "pretraining_sample.jsonl.zst");
        string dir = Path.Combine(BenchmarkArgs.TempDir(args), "train-world");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        string[] Args(string output, int microBatch, int threads) =>
        [
            "pretrain", Directory.Exists(corpus) && File.Exists(Path.Combine(corpus, "manifest.json")) ? "--shards" : "--corpus", corpus,
            "--tokenizer", Path.Combine(root, "models", "facts-base"), "--preset", preset, "--steps", $"{steps}", "--block-size", $"{block}",
            "--batch-size", $"{microBatch}", "--threads", $"{threads}", "--device", "cpu", "--eval-fraction", "0", "--log-interval", "10", "--out", output,
        ];

        Console.WriteLine($"{preset}, block {block}, global batch {batch}, {steps} steps, {cores} cores");
        var single = Run(1, Args(Path.Combine(dir, "single"), batch, 1));
        Console.WriteLine($"1 process × 1 thread: {single.TokensPerSecond:N0} tokens/s");
        var alone = Run(1, Args(Path.Combine(dir, "alone"), batch, cores));
        Console.WriteLine($"1 process × {cores} threads: {alone.TokensPerSecond:N0} tokens/s");
        var ranks = Run(world, Args(Path.Combine(dir, "ranks"), batch / world, Math.Max(1, cores / world)));
        Console.WriteLine($"{world} ranks × {Math.Max(1, cores / world)} threads: {ranks.TokensPerSecond:N0} tokens/s, gradient all-reduce {ranks.Reduction}");

        Console.WriteLine(JsonSerializer.Serialize(new
        {
            benchmark = "train",
            world,
            preset,
            block,
            global_batch = batch,
            steps,
            cores,
            tokens_per_s_one_thread = Math.Round(single.TokensPerSecond, 1),
            tokens_per_s_alone = Math.Round(alone.TokensPerSecond, 1),
            tokens_per_s_ranks = Math.Round(ranks.TokensPerSecond, 1),
            scaling = Math.Round(ranks.TokensPerSecond / alone.TokensPerSecond, 3),
            efficiency_vs_one_thread = Math.Round(ranks.TokensPerSecond / (world * single.TokensPerSecond), 3),
            gradient_all_reduce = ranks.Reduction,
            last_loss_alone = Math.Round(alone.LastLoss, 6),
            last_loss_ranks = Math.Round(ranks.LastLoss, 6),
        }));
        return Task.FromResult(0);
    }

    static (double TokensPerSecond, double LastLoss, string? Reduction) Run(int ranks, string[] arguments)
    {
        string output = CliProcess.Run(ranks, arguments);
        string run = arguments[Array.IndexOf(arguments, "--out") + 1];
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.csv"));
        var header = lines[0].Split(',');
        int rate = Array.IndexOf(header, "tokens_per_s"), loss = Array.IndexOf(header, "loss");
        var rows = lines.Skip(1).Select(l => l.Split(',')).ToList();
        double Number(string s) => double.Parse(s, CultureInfo.InvariantCulture);
        string? reduction = output.Split('\n').FirstOrDefault(l => l.StartsWith("gradient all-reduce: ", StringComparison.Ordinal))?["gradient all-reduce: ".Length..].Trim();
        return (rows.Skip(1).Average(r => Number(r[rate])), Number(rows[^1][loss]), reduction);
    }
}
