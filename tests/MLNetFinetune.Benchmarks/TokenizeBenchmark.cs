using System.Diagnostics;
using System.Text.Json;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TokenShards;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Tokenizes copies of the bundled facts corpus (examples/data/facts/corpus.jsonl.zst, the largest bundled one) into
/// Megatron shards with the bundled model's tokenizer, side by side in one run: reading the corpus alone, encoding it on
/// one thread without writing, the stage on one thread and on all cores, a rerun that skips every shard (the checksum
/// cost of resuming), then random block reads from the result; then the CLI's <c>tokenize</c> as users run it, start-up
/// included: one process on one thread, one process on all cores, and <c>mpirun -np 2</c> (map-only, a thread each).
/// MB/s counts decompressed text. Options: --copies N (default 4, one shard each), --block N (default 512), --dir PATH.
/// </summary>
static class TokenizeBenchmark
{
    public static Task<int> RunAsync(string[] args)
    {
        int copies = BenchmarkArgs.Int(args, "--copies", 4), blockSize = BenchmarkArgs.Int(args, "--block", 512);
        string root = BenchmarkArgs.RepositoryRoot(), dir = Path.Combine(BenchmarkArgs.TempDir(args), "shards");
        string corpus = Path.Combine(dir, "corpus");
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
        Directory.CreateDirectory(corpus);
        for (int i = 0; i < copies; i++)
            File.Copy(Path.Combine(root, "examples", "data", "facts", "corpus.jsonl.zst"), Path.Combine(corpus, $"facts-{i:D2}.jsonl.zst"));
        var tokenizer = TextTokenizer.Load(Path.Combine(root, "models", "facts-base"));
        var options = new CorpusOptions { Path = corpus };

        // Warm up the JIT and the tokenizer's cache on one copy, as a long run would be.
        TokenShardWriter.Write(new TokenShardOptions { Corpus = new CorpusOptions { Path = Path.Combine(corpus, "facts-00.jsonl.zst") }, Tokenizer = tokenizer, OutputDirectory = Path.Combine(dir, "warm") });

        var clock = Stopwatch.StartNew();
        var texts = new List<string>();
        var view = new CorpusDataView(options);
        using (var cursor = view.GetRowCursor(view.Schema))
        {
            var text = cursor.GetGetter<ReadOnlyMemory<char>>(view.Schema[0]);
            ReadOnlyMemory<char> value = default;
            while (cursor.MoveNext())
            {
                text(ref value);
                texts.Add(value.ToString());
            }
        }
        double readSeconds = clock.Elapsed.TotalSeconds;
        long textBytes = view.LastPass!.Bytes;

        clock.Restart();
        long tokens = 0;
        foreach (string text in texts) tokens += tokenizer.Encode(text).Count + 1;
        double encodeSeconds = clock.Elapsed.TotalSeconds;
        texts.Clear();

        TokenShardRunReport Run(string name, int threads) => TokenShardWriter.Write(new TokenShardOptions
        {
            Corpus = options, Tokenizer = tokenizer, OutputDirectory = Path.Combine(dir, name), Threads = threads,
            Progress = new SynchronousLines(),
        });
        var one = Run("one-thread", 1);
        var all = Run("all-cores", 0);
        var rerun = Run("all-cores", 0);
        TokenShardManifest.Write(Path.Combine(dir, "all-cores"), all.Inputs);

        using var dataset = TokenShardDataset.Open(Path.Combine(dir, "all-cores"), blockSize);
        var random = new Random(0);
        var block = new int[blockSize];
        long reads = Math.Min(20_000, dataset.BlockCount * 4);
        clock.Restart();
        for (long i = 0; i < reads; i++) dataset.ReadBlock(random.NextInt64(dataset.BlockCount), block);
        double blockSeconds = clock.Elapsed.TotalSeconds;

        double Mb(double seconds) => Math.Round(textBytes / 1e6 / seconds, 2);
        double Processes(string name, int ranks, int threads)
        {
            var wall = Stopwatch.StartNew();
            CliProcess.Run(ranks, ["tokenize", "--corpus", corpus, "--tokenizer", Path.Combine(root, "models", "facts-base"), "--out", Path.Combine(dir, name), "--threads", $"{threads}"]);
            double mb = Mb(wall.Elapsed.TotalSeconds);
            Console.WriteLine($"CLI tokenize, {ranks} process(es) × {(threads == 0 ? "all cores" : $"{threads} thread(s)")}: {mb} MB/s (start-up included)");
            return mb;
        }
        double cliOne = Processes("cli-one", 1, 1), cliAll = Processes("cli-all", 1, 0), cliTwo = Processes("cli-two", 2, 1);
        var result = new
        {
            benchmark = "tokenize",
            shards = copies,
            text_mb = Math.Round(textBytes / 1e6, 1),
            tokens,
            dtype = all.Shards[0].Info.DType,
            read_mb_per_s = Mb(readSeconds),
            encode_one_thread_mb_per_s = Mb(encodeSeconds),
            shards_one_thread_mb_per_s = Math.Round(one.MegabytesPerSecond, 2),
            shards_all_cores_mb_per_s = Math.Round(all.MegabytesPerSecond, 2),
            all_cores_over_one_thread = Math.Round(all.MegabytesPerSecond / one.MegabytesPerSecond, 2),
            rerun_skipped = rerun.Skipped,
            rerun_seconds = Math.Round(rerun.Elapsed.TotalSeconds, 2),
            block_size = blockSize,
            random_blocks_per_s = Math.Round(reads / blockSeconds),
            cli_one_process_one_thread_mb_per_s = cliOne,
            cli_one_process_all_cores_mb_per_s = cliAll,
            cli_two_processes_mb_per_s = cliTwo,
            cores = Environment.ProcessorCount,
        };
        Console.WriteLine(JsonSerializer.Serialize(result));
        return Task.FromResult(0);
    }

    sealed class SynchronousLines : IProgress<TokenShardProgress>
    {
        public void Report(TokenShardProgress value) => Console.WriteLine(value);
    }
}
