using System.Text.Json;
using System.Text.Json.Serialization;
using MLNetFinetune.Data;

namespace MLNetFinetune.TokenShards;

/// <summary>The tokenizer a shard was written with: the end-of-document id and the vocabulary decide whether shards can be mixed.</summary>
/// <param name="Source">Where the tokenizer came from (for people; not compared).</param>
/// <param name="VocabSize">One more than its largest id.</param>
/// <param name="EndOfDocumentId">The id appended after every document.</param>
public sealed record TokenShardTokenizer(string Source, int VocabSize, int EndOfDocumentId)
{
    /// <summary>True when ids written with either tokenizer mean the same (same vocabulary size and end-of-document id).</summary>
    public bool Matches(TokenShardTokenizer other) => VocabSize == other.VocabSize && EndOfDocumentId == other.EndOfDocumentId;
}

/// <summary>
/// One shard's record, written beside it as <c>&lt;name&gt;.shard.json</c> once its <c>.bin</c> and <c>.idx</c> are complete:
/// the input's size and SHA-256 (to tell whether a rerun may skip it) and the outputs' sizes and SHA-256 (to tell whether they
/// are intact), plus counts the manifest sums without opening the shards.
/// </summary>
/// <param name="Name">The shard's prefix in its folder (<c>00</c> for <c>00.bin</c>/<c>00.idx</c>).</param>
/// <param name="Input">The input file, full path, as the writing rank saw it.</param>
/// <param name="InputBytes">The input file's size (compressed, as stored).</param>
/// <param name="InputSha256">The input file's SHA-256, lower-case hex.</param>
/// <param name="TextBytes">Decompressed text bytes read from it.</param>
/// <param name="Documents">Documents (= sequences) in the shard.</param>
/// <param name="SkippedRecords">Bad records skipped under <see cref="BadRecordPolicy.SkipAndCount"/>.</param>
/// <param name="Tokens">Tokens in the shard, end-of-document ids included.</param>
/// <param name="DType">The numpy name of the token type (<c>uint16</c>, <c>int32</c>).</param>
/// <param name="BinBytes">Size of <c>.bin</c>.</param>
/// <param name="BinSha256">SHA-256 of <c>.bin</c>.</param>
/// <param name="IdxBytes">Size of <c>.idx</c>.</param>
/// <param name="IdxSha256">SHA-256 of <c>.idx</c>.</param>
/// <param name="Tokenizer">The tokenizer the ids come from.</param>
public sealed record TokenShardInfo(
    string Name, string Input, long InputBytes, string InputSha256, long TextBytes, long Documents, long SkippedRecords, long Tokens,
    [property: JsonPropertyName("dtype")] string DType, long BinBytes, string BinSha256, long IdxBytes, string IdxSha256, TokenShardTokenizer Tokenizer)
{
    /// <summary>The sidecar's file name suffix.</summary>
    public const string SidecarSuffix = ".shard.json";

    /// <summary>The sidecar path of shard <paramref name="name"/> in <paramref name="folder"/>.</summary>
    public static string SidecarPath(string folder, string name) => Path.Combine(folder, name + SidecarSuffix);

    /// <summary>
    /// The shard name of an input file: its name without the corpus extension (<c>00.jsonl.zst</c> → <c>00</c>), case kept,
    /// so shards sort and read like the inputs they come from.
    /// </summary>
    public static string NameOf(string input)
    {
        string name = Path.GetFileName(input);
        string? extension = CorpusOptions.SupportedExtensions.Where(e => name.EndsWith(e, StringComparison.OrdinalIgnoreCase)).MaxBy(e => e.Length);
        return extension == null || extension.Length == name.Length ? name : name[..^extension.Length];
    }

    /// <summary>Reads a sidecar; null when it does not exist or does not parse (a shard to redo, not an error).</summary>
    public static TokenShardInfo? TryRead(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            return JsonSerializer.Deserialize<TokenShardInfo>(File.ReadAllBytes(path), ShardJson.Options);
        }
        catch (JsonException)
        {
            return null;
        }
    }

    internal void Write(string path) => DataFiles.WriteJson(path, JsonSerializer.SerializeToNode(this, ShardJson.Options)!);
}

/// <summary>
/// <c>manifest.json</c> of a token-shard folder: every shard in input order with its counts and checksums, the totals, the
/// dtype and the tokenizer. Written once, after every rank finished, from the sidecars; it is what
/// <see cref="TokenShardDataset"/> opens, so a training run sees a complete, consistent set of shards or none.
/// </summary>
/// <param name="Format">What the shards are: <see cref="MegatronFormat"/>.</param>
/// <param name="DType">The token type of every shard.</param>
/// <param name="Tokenizer">The tokenizer of every shard.</param>
/// <param name="Documents">Documents in all shards.</param>
/// <param name="Tokens">Tokens in all shards.</param>
/// <param name="TextBytes">Decompressed text bytes the shards were made from.</param>
/// <param name="Shards">The shards in input order, the order training concatenates them in.</param>
public sealed record TokenShardManifest(string Format, [property: JsonPropertyName("dtype")] string DType, TokenShardTokenizer Tokenizer, long Documents, long Tokens, long TextBytes,
    IReadOnlyList<TokenShardInfo> Shards)
{
    /// <summary>The manifest's file name.</summary>
    public const string FileName = "manifest.json";

    /// <summary>The <see cref="Format"/> value: Megatron's MMapIndexedDataset, index version 1.</summary>
    public const string MegatronFormat = "megatron-mmap-indexed-dataset/1";

    /// <summary>
    /// Merges the sidecars of <paramref name="expectedInputs"/> (all ranks' inputs, in order) into <c>manifest.json</c>.
    /// Fails, naming them, when a shard is missing or stale (its files or input no longer the size recorded), or when
    /// shards disagree on dtype or tokenizer.
    /// </summary>
    public static TokenShardManifest Write(string folder, IReadOnlyList<string> expectedInputs)
    {
        var (manifest, missing) = Collect(folder, expectedInputs);
        if (missing.Count > 0) throw MissingShards(folder, expectedInputs.Count, missing, waited: null);
        return Save(folder, manifest!);
    }

    static TokenShardManifest Save(string folder, TokenShardManifest manifest)
    {
        DataFiles.WriteJson(Path.Combine(folder, FileName), JsonSerializer.SerializeToNode(manifest, ShardJson.Options)!);
        return manifest;
    }

    /// <summary>
    /// Rank 0's step when ranks share no barrier: polls until every expected shard's sidecar is there, then
    /// <see cref="Write"/>s the manifest; after <paramref name="timeout"/> fails naming the shards still missing.
    /// </summary>
    public static TokenShardManifest WaitAndWrite(string folder, IReadOnlyList<string> expectedInputs, TimeSpan timeout, TimeSpan? pollInterval = null,
        CancellationToken cancellationToken = default)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (true)
        {
            var (manifest, missing) = Collect(folder, expectedInputs);
            if (missing.Count == 0) return Save(folder, manifest!);
            if (clock.Elapsed >= timeout) throw MissingShards(folder, expectedInputs.Count, missing, timeout);
            var wait = pollInterval ?? TimeSpan.FromSeconds(2);
            cancellationToken.WaitHandle.WaitOne(wait < timeout - clock.Elapsed ? wait : timeout - clock.Elapsed);
            cancellationToken.ThrowIfCancellationRequested();
        }
    }

    /// <summary>Reads <c>manifest.json</c> from <paramref name="folder"/>.</summary>
    public static TokenShardManifest Read(string folder)
    {
        string path = Path.Combine(folder, FileName);
        if (!File.Exists(path))
            throw new FileNotFoundException($"'{folder}' has no {FileName}: tokenizing is unfinished, or the manifest step (after all ranks) did not run.", path);
        try
        {
            return JsonSerializer.Deserialize<TokenShardManifest>(File.ReadAllBytes(path), ShardJson.Options)
                ?? throw new DataFileException(path, 0, "the manifest is null");
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "token-shard manifest", e);
        }
    }

    static (TokenShardManifest? Manifest, List<string> Missing) Collect(string folder, IReadOnlyList<string> inputs)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(folder);
        if (inputs is not { Count: > 0 }) throw new ArgumentException("A manifest needs the run's inputs (TokenShardRunReport.Inputs).", nameof(inputs));
        var shards = new List<TokenShardInfo>();
        var missing = new List<string>();
        foreach (string input in inputs)
        {
            string name = TokenShardInfo.NameOf(input);
            var info = TokenShardInfo.TryRead(TokenShardInfo.SidecarPath(folder, name));
            if (info == null) missing.Add($"{name} (from {input})");
            else if (!SizesMatch(folder, info, input)) missing.Add($"{name} (from {input}; stale: its files or input changed since it was written)");
            else shards.Add(info);
        }
        if (missing.Count > 0) return (null, missing);
        var first = shards[0];
        foreach (var shard in shards)
        {
            if (shard.DType != first.DType)
                throw new InvalidDataException($"Shards in '{folder}' mix dtypes: {first.Name} is {first.DType}, {shard.Name} is {shard.DType}. Rewrite them with one --dtype.");
            if (!shard.Tokenizer.Matches(first.Tokenizer))
                throw new InvalidDataException($"Shards in '{folder}' come from different tokenizers: {first.Name} from {first.Tokenizer}, {shard.Name} from {shard.Tokenizer}.");
        }
        return (new TokenShardManifest(MegatronFormat, first.DType, first.Tokenizer, shards.Sum(s => s.Documents), shards.Sum(s => s.Tokens),
            shards.Sum(s => s.TextBytes), shards), missing);
    }

    // Sizes only: hashing every shard again would double the cost of the run; the writing rank checked the hashes.
    static bool SizesMatch(string folder, TokenShardInfo info, string input)
    {
        var bin = new FileInfo(Path.Combine(folder, info.Name + ".bin"));
        var idx = new FileInfo(Path.Combine(folder, info.Name + ".idx"));
        var source = new FileInfo(input);
        return bin.Exists && idx.Exists && source.Exists && bin.Length == info.BinBytes && idx.Length == info.IdxBytes && source.Length == info.InputBytes;
    }

    static IOException MissingShards(string folder, int expected, List<string> missing, TimeSpan? waited) => new(
        $"{missing.Count} of {expected} token shards are missing in '{folder}'{(waited is { } w ? $" after waiting {w.TotalSeconds:N0} s" : "")} " +
        $"(their rank has not finished, or failed): {string.Join(", ", missing.Take(20))}{(missing.Count > 20 ? ", …" : "")}.");
}

/// <summary>The JSON spelling of sidecars and manifests: snake_case, as Python scripts expect; a field missing fails rather than reads as 0.</summary>
static class ShardJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        RespectRequiredConstructorParameters = true,
    };
}
