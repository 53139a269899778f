namespace MLNetFinetune.TokenShards;

/// <summary>
/// Token shards as training reads them: the ids of every shard, in manifest order, concatenated (documents joined by
/// their end-of-document ids) and cut into non-overlapping blocks of <see cref="BlockSize"/> tokens, as nanoGPT and
/// Megatron's GPT dataset train on them; the last, shorter block is dropped. Blocks may cross document and shard
/// boundaries. Random access through memory maps: reading block i touches only the pages of its tokens, so a trainer
/// shuffles block indices and reads any block of a corpus larger than memory.
/// </summary>
public sealed class TokenShardDataset : IDisposable
{
    readonly IndexedDatasetReader[] _shards;
    readonly long[] _starts; // token offset of each shard in the concatenation

    TokenShardDataset(IndexedDatasetReader[] shards, int blockSize, TokenShardManifest? manifest)
    {
        _shards = shards;
        BlockSize = blockSize;
        Manifest = manifest;
        _starts = new long[shards.Length];
        long tokens = 0;
        for (int i = 0; i < shards.Length; i++)
        {
            _starts[i] = tokens;
            tokens += shards[i].TokenCount;
        }
        TokenCount = tokens;
        BlockCount = tokens / blockSize;
    }

    /// <summary>
    /// Opens a folder written by the tokenize stage (through its <c>manifest.json</c>: every shard present, its counts and
    /// dtype as recorded), or one shard by prefix (<c>out/00</c>, or <c>out/00.bin</c>/<c>.idx</c>).
    /// </summary>
    public static TokenShardDataset Open(string path, int blockSize)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), $"The block size must be positive, not {blockSize}.");
        if (!Directory.Exists(path)) return new TokenShardDataset([IndexedDatasetReader.Open(path)], blockSize, null);

        var manifest = TokenShardManifest.Read(path);
        var shards = new List<IndexedDatasetReader>();
        try
        {
            foreach (var info in manifest.Shards)
            {
                var shard = IndexedDatasetReader.Open(Path.Combine(path, info.Name));
                shards.Add(shard);
                if (shard.DType.Name() != info.DType || shard.DocumentCount != info.Documents || shard.TokenCount != info.Tokens)
                    throw new InvalidDataException($"Shard '{shard.Prefix}' holds {shard.DocumentCount:N0} documents and {shard.TokenCount:N0} {shard.DType.Name()} tokens, " +
                        $"but {Path.Combine(path, TokenShardManifest.FileName)} records {info.Documents:N0} and {info.Tokens:N0} {info.DType}: it was rewritten after the manifest; write the manifest again.");
            }
            return new TokenShardDataset([.. shards], blockSize, manifest);
        }
        catch
        {
            foreach (var shard in shards) shard.Dispose();
            throw;
        }
    }

    /// <summary>Tokens per block.</summary>
    public int BlockSize { get; }

    /// <summary>Whole blocks in the concatenated tokens.</summary>
    public long BlockCount { get; }

    /// <summary>Tokens in all shards (the dropped tail included).</summary>
    public long TokenCount { get; }

    /// <summary>The manifest the folder was opened through; null for a single shard.</summary>
    public TokenShardManifest? Manifest { get; }

    /// <summary>The shards, in concatenation order.</summary>
    public IReadOnlyList<IndexedDatasetReader> Shards => _shards;

    /// <summary>
    /// Copies block <paramref name="index"/> (tokens index·BlockSize … (index+1)·BlockSize − 1) into <paramref name="destination"/>.
    /// Safe to call from several threads at once (a trainer's prefetching loader).
    /// </summary>
    public void ReadBlock(long index, Span<int> destination)
    {
        if (index < 0 || index >= BlockCount) throw new ArgumentOutOfRangeException(nameof(index), $"Block {index} is outside 0..{BlockCount - 1}.");
        if (destination.Length != BlockSize) throw new ArgumentException($"The destination holds {destination.Length} ids; a block is {BlockSize}.", nameof(destination));
        long start = index * BlockSize;
        int shard = Array.BinarySearch(_starts, start);
        if (shard < 0) shard = ~shard - 1;
        while (!destination.IsEmpty)
        {
            var reader = _shards[shard];
            long offset = start - _starts[shard];
            int count = (int)Math.Min(destination.Length, reader.TokenCount - offset);
            reader.ReadTokens(offset, destination[..count]);
            destination = destination[count..];
            start += count;
            shard++;
        }
    }

    /// <summary>Releases the memory maps.</summary>
    public void Dispose()
    {
        foreach (var shard in _shards) shard.Dispose();
    }
}
