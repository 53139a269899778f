using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.TokenShards;

/// <summary>
/// Options of the tokenize-to-shards stage: a corpus becomes one Megatron <c>.bin</c>/<c>.idx</c> shard per input file,
/// so tokenizing is done once, by as many processes as there are files, and training reads ids instead of text.
/// </summary>
public sealed class TokenShardOptions
{
    /// <summary>The corpus: its <see cref="CorpusOptions.Path"/> (file, folder or glob), text field, text mode and bad-record policy.</summary>
    public required CorpusOptions Corpus { get; init; }

    /// <summary>The tokenizer; its end-of-sequence id ends every document (Megatron's <c>--append-eod</c>).</summary>
    public required TextTokenizer Tokenizer { get; init; }

    /// <summary>The folder receiving <c>&lt;input-stem&gt;.bin/.idx</c>, the per-shard sidecars and <c>manifest.json</c>.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>How ids are stored; null (default) picks as Megatron does: uint16 below 65,500 tokens, else int32.</summary>
    public TokenDType? DType { get; init; }

    /// <summary>This process's rank: it tokenizes input files i with i mod <see cref="WorldSize"/> = Rank, and touches no other.</summary>
    public int Rank { get; init; }

    /// <summary>How many processes share the inputs. Default 1.</summary>
    public int WorldSize { get; init; } = 1;

    /// <summary>
    /// Documents tokenized together, in parallel over the cores; output order is the input order whatever the value.
    /// Default 256.
    /// </summary>
    public int BatchDocuments { get; init; } = 256;

    /// <summary>Threads tokenizing a batch; 0 (default) uses every core.</summary>
    public int Threads { get; init; }

    /// <summary>Receives progress at most once a second and at the end of each shard.</summary>
    public IProgress<TokenShardProgress>? Progress { get; init; }

    /// <summary>The dtype the shards get: <see cref="DType"/>, or Megatron's best fit for the vocabulary.</summary>
    public TokenDType ResolveDType() => DType ?? TokenDTypes.BestFitting(Tokenizer.VocabSize);

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(Corpus);
        ArgumentNullException.ThrowIfNull(Tokenizer);
        ArgumentException.ThrowIfNullOrWhiteSpace(OutputDirectory);
        if (WorldSize < 1) throw new ArgumentOutOfRangeException(nameof(WorldSize), $"WorldSize must be at least 1, not {WorldSize}.");
        if (Rank < 0 || Rank >= WorldSize) throw new ArgumentOutOfRangeException(nameof(Rank), $"Rank {Rank} is outside 0..{WorldSize - 1} (WorldSize {WorldSize}).");
        if (BatchDocuments < 1) throw new ArgumentOutOfRangeException(nameof(BatchDocuments), "BatchDocuments must be positive.");
        if (Threads < 0) throw new ArgumentOutOfRangeException(nameof(Threads), "Threads must be 0 (all cores) or positive.");
        if (Corpus.MetadataFields.Count > 0) throw new ArgumentException("Token shards hold ids only: leave Corpus.MetadataFields empty.", nameof(Corpus));
        if (Tokenizer.EosId == null)
            throw new ArgumentException($"Tokenizer '{Tokenizer.Source}' has no end-of-sequence token to end documents with.", nameof(Tokenizer));
        if (ResolveDType() == TokenDType.UInt16 && Tokenizer.VocabSize > ushort.MaxValue + 1)
            throw new ArgumentException($"Tokenizer '{Tokenizer.Source}' has {Tokenizer.VocabSize:N0} tokens; uint16 holds ids below 65,536: use int32.", nameof(DType));
    }
}

/// <summary>Progress of a tokenize run on this rank.</summary>
/// <param name="Input">The input file being tokenized.</param>
/// <param name="Shard">Its position among this rank's inputs (1-based).</param>
/// <param name="Shards">This rank's inputs.</param>
/// <param name="Bytes">Text bytes (decompressed) tokenized in this run, all shards so far.</param>
/// <param name="Documents">Documents tokenized in this run.</param>
/// <param name="Tokens">Tokens written in this run, end-of-document ids included.</param>
/// <param name="Elapsed">Time since the run started.</param>
public sealed record TokenShardProgress(string Input, int Shard, int Shards, long Bytes, long Documents, long Tokens, TimeSpan Elapsed)
{
    /// <summary>Text megabytes (10^6) per second.</summary>
    public double MegabytesPerSecond => Bytes / 1e6 / Math.Max(Elapsed.TotalSeconds, 1e-9);

    /// <summary>Documents per second.</summary>
    public double DocumentsPerSecond => Documents / Math.Max(Elapsed.TotalSeconds, 1e-9);

    /// <summary>Tokens per second.</summary>
    public double TokensPerSecond => Tokens / Math.Max(Elapsed.TotalSeconds, 1e-9);

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant(
        $"tokenize: shard {Shard}/{Shards} ({Path.GetFileName(Input)}), {Documents:N0} documents, {Tokens:N0} tokens, {MegabytesPerSecond:F2} MB/s, {DocumentsPerSecond:N0} documents/s, {TokensPerSecond:N0} tokens/s");
}
