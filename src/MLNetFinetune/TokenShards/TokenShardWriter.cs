using System.Diagnostics;
using System.Security.Cryptography;
using MLNetFinetune.Data;

namespace MLNetFinetune.TokenShards;

/// <summary>One input's outcome in a tokenize run.</summary>
/// <param name="Info">The shard's record (its sidecar).</param>
/// <param name="Skipped">True when an earlier run's shard was intact and kept.</param>
public sealed record TokenShardResult(TokenShardInfo Info, bool Skipped);

/// <summary>What one rank's tokenize run did.</summary>
/// <param name="Inputs">Every input of the corpus, all ranks', in order: what the manifest step expects.</param>
/// <param name="Shards">This rank's shards, written or skipped, in input order.</param>
/// <param name="Elapsed">Wall time of the run.</param>
public sealed record TokenShardRunReport(IReadOnlyList<string> Inputs, IReadOnlyList<TokenShardResult> Shards, TimeSpan Elapsed)
{
    /// <summary>Shards tokenized in this run.</summary>
    public int Written => Shards.Count(s => !s.Skipped);

    /// <summary>Shards kept from an earlier run.</summary>
    public int Skipped => Shards.Count(s => s.Skipped);

    /// <summary>Documents in this rank's shards, skipped ones included.</summary>
    public long Documents => Shards.Sum(s => s.Info.Documents);

    /// <summary>Tokens in this rank's shards, skipped ones included.</summary>
    public long Tokens => Shards.Sum(s => s.Info.Tokens);

    /// <summary>Text bytes (decompressed) tokenized in this run.</summary>
    public long TextBytesWritten => Shards.Where(s => !s.Skipped).Sum(s => s.Info.TextBytes);

    /// <summary>Throughput of this run: text megabytes (10^6) tokenized per second.</summary>
    public double MegabytesPerSecond => TextBytesWritten / 1e6 / Math.Max(Elapsed.TotalSeconds, 1e-9);

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant(
        $"{Written} shards written, {Skipped} skipped; {Documents:N0} documents, {Tokens:N0} tokens; {TextBytesWritten / 1e6:F1} MB tokenized in {Elapsed.TotalSeconds:F1} s ({MegabytesPerSecond:F2} MB/s)");
}

/// <summary>
/// Tokenizes a corpus into Megatron shards, one per input file (<c>OUT/&lt;input-stem&gt;.bin/.idx</c> plus a sidecar).
/// Map-only: rank r takes inputs r, r + world, … of the sorted file list and touches no other file, so ranks need no
/// communication. Resumable: an input whose sidecar still matches the input and both outputs (SHA-256) is skipped, and
/// anything else of this rank's is redone from scratch, so a killed run is finished by running it again.
/// </summary>
public static class TokenShardWriter
{
    /// <summary>Runs this rank's share; the manifest is a separate step (<see cref="TokenShardManifest.Write"/>) once all ranks finished.</summary>
    public static TokenShardRunReport Write(TokenShardOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var clock = Stopwatch.StartNew();
        var inputs = DataFiles.Resolve(options.Corpus.Path, CorpusOptions.SupportedExtensions);
        CheckNames(inputs);
        CheckOutsideCorpus(options.Corpus.Path, inputs, options.OutputDirectory);
        foreach (string input in inputs) CorpusReader.CheckFileType(input); // fail on every rank alike, before any work
        Directory.CreateDirectory(options.OutputDirectory);

        var mine = inputs.Where((_, i) => i % options.WorldSize == options.Rank).ToList();
        var dtype = options.ResolveDType();
        var tokenizer = new TokenShardTokenizer(options.Tokenizer.Source, options.Tokenizer.VocabSize, options.Tokenizer.EosId!.Value);
        var results = new List<TokenShardResult>();
        var run = new RunCounters(clock);
        for (int i = 0; i < mine.Count; i++)
        {
            string input = mine[i], name = TokenShardInfo.NameOf(input);
            string sidecar = TokenShardInfo.SidecarPath(options.OutputDirectory, name);
            string inputSha = Sha256(input);
            var previous = TokenShardInfo.TryRead(sidecar);
            if (previous != null && IsIntact(previous, options.OutputDirectory, inputSha, dtype, tokenizer))
            {
                results.Add(new TokenShardResult(previous, Skipped: true));
                continue;
            }
            // Gone before the outputs change, so nothing (a waiting rank 0, a rerun) takes a half-rewritten shard for done.
            File.Delete(sidecar);
            var info = WriteShard(options, input, name, inputSha, dtype, tokenizer, run, i + 1, mine.Count);
            info.Write(sidecar);
            results.Add(new TokenShardResult(info, Skipped: false));
        }
        return new TokenShardRunReport(inputs, results, clock.Elapsed);
    }

    // Two inputs with one stem (a/00.jsonl, b/00.jsonl.zst) would write the same shard: refuse before any rank writes.
    static void CheckNames(IReadOnlyList<string> inputs)
    {
        var clash = inputs.GroupBy(TokenShardInfo.NameOf, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (clash != null)
            throw new ArgumentException($"Inputs {string.Join(" and ", clash.Select(f => $"'{f}'"))} would both become shard '{clash.Key}': " +
                "give each input file a distinct name (without its extension), or tokenize them into separate folders.");
    }

    // Sidecars and the manifest end in .json, which a corpus folder is searched for: written inside the corpus, they would
    // be read as corpus files by the next run.
    static void CheckOutsideCorpus(string corpus, IReadOnlyList<string> inputs, string output)
    {
        string folder = Path.GetFullPath(output).TrimEnd(Path.DirectorySeparatorChar);
        string? inside = inputs.FirstOrDefault(i => Path.GetDirectoryName(Path.GetFullPath(i)) == folder);
        if (inside == null && Directory.Exists(corpus))
        {
            string root = Path.GetFullPath(corpus).TrimEnd(Path.DirectorySeparatorChar);
            if (folder == root || folder.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal)) inside = corpus;
        }
        if (inside != null)
            throw new ArgumentException($"The output folder '{output}' is inside the corpus ('{inside}'): write shards to a folder outside it.");
    }

    static bool IsIntact(TokenShardInfo info, string folder, string inputSha, TokenDType dtype, TokenShardTokenizer tokenizer)
    {
        string prefix = Path.Combine(folder, info.Name);
        return info.InputSha256 == inputSha && info.DType == dtype.Name() && info.Tokenizer.Matches(tokenizer)
            && SameFile(prefix + ".bin", info.BinBytes, info.BinSha256) && SameFile(prefix + ".idx", info.IdxBytes, info.IdxSha256);
    }

    static bool SameFile(string path, long bytes, string sha) => File.Exists(path) && new FileInfo(path).Length == bytes && Sha256(path) == sha;

    static string Sha256(string path)
    {
        using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20, FileOptions.SequentialScan);
        return Convert.ToHexStringLower(SHA256.HashData(file));
    }

    static TokenShardInfo WriteShard(TokenShardOptions options, string input, string name, string inputSha, TokenDType dtype,
        TokenShardTokenizer tokenizer, RunCounters run, int shard, int shards)
    {
        using var reader = new CorpusReader(options.Corpus, [input], []);
        var files = IndexedDatasetWriter.Write(Path.Combine(options.OutputDirectory, name), dtype,
            Documents(reader, options, tokenizer.EndOfDocumentId, run, input, shard, shards));
        var report = reader.Report();
        return new TokenShardInfo(name, Path.GetFullPath(input), new FileInfo(input).Length, inputSha, report.Bytes, files.Documents, report.Skipped,
            files.Tokens, dtype.Name(), files.BinBytes, files.BinSha256, files.IdxBytes, files.IdxSha256, tokenizer);
    }

    // Reads a batch of documents, encodes it on the cores, hands the ids on in input order: the output is the same
    // whatever the batch size or thread count. While one batch is encoded the next is read and decompressed.
    static IEnumerable<ReadOnlyMemory<int>> Documents(CorpusReader reader, TokenShardOptions options, int eod, RunCounters run,
        string input, int shard, int shards)
    {
        var parallel = new ParallelOptions { MaxDegreeOfParallelism = options.Threads > 0 ? options.Threads : Environment.ProcessorCount };
        var tokenizer = options.Tokenizer.Inner;
        long bytesBefore = run.Bytes;
        var next = Task.Run(() => ReadBatch(reader, options.BatchDocuments));
        try
        {
            while (true)
            {
                var (texts, bytesRead) = next.GetAwaiter().GetResult();
                if (texts.Count == 0) break;
                next = Task.Run(() => ReadBatch(reader, options.BatchDocuments));
                var encoded = new int[texts.Count][];
                Parallel.For(0, texts.Count, parallel, i =>
                {
                    var ids = tokenizer.EncodeToIds(texts[i]);
                    var withEod = new int[ids.Count + 1];
                    for (int k = 0; k < ids.Count; k++) withEod[k] = ids[k];
                    withEod[^1] = eod;
                    encoded[i] = withEod;
                });
                foreach (var ids in encoded)
                {
                    yield return ids;
                    run.Tokens += ids.Length;
                }
                run.Documents += texts.Count;
                run.Bytes = bytesBefore + bytesRead;
                run.Report(options.Progress, input, shard, shards, force: false);
            }
            run.Bytes = bytesBefore + reader.Bytes;
            run.Report(options.Progress, input, shard, shards, force: true);
        }
        finally
        {
            // A failed write leaves the loop early: the read ahead must stop using the reader before it is disposed.
            Task.WhenAny(next).GetAwaiter().GetResult();
        }
    }

    static (List<string> Texts, long BytesRead) ReadBatch(CorpusReader reader, int count)
    {
        var texts = new List<string>(count);
        while (texts.Count < count && reader.MoveNext()) texts.Add(reader.Text);
        return (texts, reader.Bytes);
    }

    sealed class RunCounters(Stopwatch clock)
    {
        public long Bytes, Documents, Tokens;
        TimeSpan _reported;

        // At most once a second, and at the end of each shard: progress lines stay readable in logs.
        public void Report(IProgress<TokenShardProgress>? progress, string input, int shard, int shards, bool force)
        {
            if (progress == null || (!force && clock.Elapsed - _reported < TimeSpan.FromSeconds(1))) return;
            _reported = clock.Elapsed;
            progress.Report(new TokenShardProgress(input, shard, shards, Bytes, Documents, Tokens, clock.Elapsed));
        }
    }
}
