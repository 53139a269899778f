using System.Buffers;
using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using MLNetFinetune.Data;

namespace MLNetFinetune.TokenShards;

/// <summary>
/// Reads a Megatron MMapIndexedDataset (<c>prefix.bin</c> + <c>prefix.idx</c>) through memory maps, as Megatron's
/// <c>_IndexReader</c> and <c>_MMapBinReader</c> do: opening touches the index only, and reading tokens touches only the
/// pages of <c>.bin</c> they lie on, so a shard larger than memory reads at random. Opening checks the header and that
/// the sequences lie back to back inside <c>.bin</c> (what every writer of the format produces), failing with the file
/// named, so a truncated or foreign file is caught before training rather than read as garbage.
/// </summary>
public sealed class IndexedDatasetReader : IDisposable
{
    readonly MemoryMappedFile _indexMap;
    readonly MemoryMappedViewAccessor _index;
    readonly MemoryMappedFile? _binMap;
    readonly MemoryMappedViewAccessor? _bin;
    readonly long _lengthsAt, _pointersAt, _documentsAt;

    IndexedDatasetReader(string prefix)
    {
        Prefix = prefix;
        IdxPath = prefix + ".idx";
        BinPath = prefix + ".bin";
        if (!File.Exists(IdxPath)) throw new FileNotFoundException($"Token shard index '{IdxPath}' does not exist.", IdxPath);
        if (!File.Exists(BinPath)) throw new FileNotFoundException($"Token shard data '{BinPath}' does not exist (its index '{IdxPath}' does).", BinPath);
        long idxBytes = new FileInfo(IdxPath).Length, binBytes = new FileInfo(BinPath).Length;
        if (idxBytes < IndexedDatasetWriter.HeaderBytes)
            throw Bad(IdxPath, $"truncated: {idxBytes} bytes, shorter than the {IndexedDatasetWriter.HeaderBytes}-byte header");

        _indexMap = MemoryMappedFile.CreateFromFile(IdxPath, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            _index = _indexMap.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            Span<byte> header = stackalloc byte[IndexedDatasetWriter.HeaderBytes];
            _index.SafeMemoryMappedViewHandle.ReadSpan(0, header);
            if (!header[..9].SequenceEqual(IndexedDatasetWriter.Magic))
                throw Bad(IdxPath, $"bad magic {Convert.ToHexString(header[..9])}: not a Megatron MMapIndexedDataset index (expected MMIDIDX\\0\\0)");
            ulong version = BinaryPrimitives.ReadUInt64LittleEndian(header[9..]);
            if (version != IndexedDatasetWriter.Version) throw Bad(IdxPath, $"index version {version}; only version {IndexedDatasetWriter.Version} exists");
            byte code = header[17];
            if (code is not ((byte)TokenDType.UInt16 or (byte)TokenDType.Int32))
                throw Bad(IdxPath, $"dtype code {code} is not a token type read here (uint16 = 8, int32 = 4)");
            DType = (TokenDType)code;
            ulong sequences = BinaryPrimitives.ReadUInt64LittleEndian(header[18..]), documents = BinaryPrimitives.ReadUInt64LittleEndian(header[26..]);
            // Megatron's multimodal indexes append one int8 mode per sequence; those are accepted and ignored.
            ulong expected = (ulong)IndexedDatasetWriter.HeaderBytes + sequences * 12 + documents * 8;
            if (sequences > (ulong)idxBytes || documents > (ulong)idxBytes || documents == 0 || (ulong)idxBytes < expected || (ulong)idxBytes > expected + sequences)
                throw Bad(IdxPath, documents == 0 && (ulong)idxBytes >= expected
                    ? "document count is 0 (document_indices always starts with 0)"
                    : $"truncated or inconsistent: {idxBytes:N0} bytes, but {sequences:N0} sequences and {documents:N0} document indices need {expected:N0}");
            SequenceCount = (long)sequences;
            DocumentCount = (long)documents - 1;
            _lengthsAt = IndexedDatasetWriter.HeaderBytes;
            _pointersAt = _lengthsAt + 4 * SequenceCount;
            _documentsAt = _pointersAt + 8 * SequenceCount;
            TokenCount = CheckLayout(binBytes);
            CheckDocumentIndices();
            if (binBytes > 0)
            {
                _binMap = MemoryMappedFile.CreateFromFile(BinPath, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
                _bin = _binMap.CreateViewAccessor(0, 0, MemoryMappedFileAccess.Read);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>Opens <c>prefix.bin</c> + <c>prefix.idx</c>; <paramref name="path"/> may also name either file.</summary>
    public static IndexedDatasetReader Open(string path)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        string prefix = path.EndsWith(".bin", StringComparison.Ordinal) || path.EndsWith(".idx", StringComparison.Ordinal) ? path[..^4] : path;
        return new IndexedDatasetReader(prefix);
    }

    /// <summary>The path without <c>.bin</c>/<c>.idx</c>, as Megatron's <c>--data-path</c> names a dataset.</summary>
    public string Prefix { get; }

    /// <summary>The index file.</summary>
    public string IdxPath { get; }

    /// <summary>The token file.</summary>
    public string BinPath { get; }

    /// <summary>How the tokens are stored.</summary>
    public TokenDType DType { get; }

    /// <summary>Sequences in the index (one per document for shards this library writes).</summary>
    public long SequenceCount { get; }

    /// <summary>Documents: the length of document_indices less its leading 0.</summary>
    public long DocumentCount { get; }

    /// <summary>Tokens in <c>.bin</c>.</summary>
    public long TokenCount { get; }

    /// <summary>The number of tokens of sequence <paramref name="index"/>.</summary>
    public int SequenceLength(long index) => _index.ReadInt32(_lengthsAt + 4 * CheckSequence(index));

    /// <summary>The token offset of sequence <paramref name="index"/> in the concatenated tokens.</summary>
    public long SequenceStart(long index) => _index.ReadInt64(_pointersAt + 8 * CheckSequence(index)) / DType.Size();

    /// <summary>The ids of sequence <paramref name="index"/>.</summary>
    public int[] ReadSequence(long index)
    {
        var ids = new int[SequenceLength(index)];
        ReadTokens(SequenceStart(index), ids);
        return ids;
    }

    /// <summary>
    /// Copies <c>destination.Length</c> ids starting at token <paramref name="start"/> of the concatenated sequences (a
    /// range may cross document boundaries); only the pages holding them are read.
    /// </summary>
    public void ReadTokens(long start, Span<int> destination)
    {
        if (start < 0 || start > TokenCount - destination.Length)
            throw new ArgumentOutOfRangeException(nameof(start), $"Tokens {start}..{start + destination.Length} lie outside {BinPath}'s {TokenCount:N0} tokens.");
        if (destination.IsEmpty) return;
        var handle = _bin!.SafeMemoryMappedViewHandle;
        if (DType == TokenDType.Int32)
        {
            handle.ReadSpan((ulong)(start * 4), destination);
            return;
        }
        const int chunk = 4096;
        ushort[] narrow = ArrayPool<ushort>.Shared.Rent(Math.Min(chunk, destination.Length));
        try
        {
            for (int done = 0; done < destination.Length; done += chunk)
            {
                int count = Math.Min(chunk, destination.Length - done);
                var part = narrow.AsSpan(0, count);
                handle.ReadSpan((ulong)((start + done) * 2), part);
                for (int i = 0; i < count; i++) destination[done + i] = part[i];
            }
        }
        finally
        {
            ArrayPool<ushort>.Shared.Return(narrow);
        }
    }

    long CheckSequence(long index) => index >= 0 && index < SequenceCount ? index
        : throw new ArgumentOutOfRangeException(nameof(index), $"Sequence {index} is outside {IdxPath}'s {SequenceCount:N0} sequences.");

    // The tokens must lie back to back from offset 0 and fill .bin exactly: a pointer past the end, a gap or a short
    // .bin is a damaged or half-copied shard. Read in chunks, as the index of a large corpus holds hundreds of millions
    // of entries. Returns the token count.
    long CheckLayout(long binBytes)
    {
        const int chunk = 1 << 14;
        int size = DType.Size();
        long offset = 0;
        int[] lengths = ArrayPool<int>.Shared.Rent(chunk);
        long[] pointers = ArrayPool<long>.Shared.Rent(chunk);
        try
        {
            var handle = _index.SafeMemoryMappedViewHandle;
            for (long first = 0; first < SequenceCount; first += chunk)
            {
                int count = (int)Math.Min(chunk, SequenceCount - first);
                handle.ReadSpan((ulong)(_lengthsAt + 4 * first), lengths.AsSpan(0, count));
                handle.ReadSpan((ulong)(_pointersAt + 8 * first), pointers.AsSpan(0, count));
                for (int k = 0; k < count; k++)
                {
                    long i = first + k, pointer = pointers[k];
                    int length = lengths[k];
                    if (length < 0) throw Bad(IdxPath, $"sequence {i} has negative length {length}");
                    if (pointer < 0 || pointer + (long)length * size > binBytes)
                        throw Bad(IdxPath, $"sequence {i} ends at byte {pointer + (long)length * size:N0}, past the end of {BinPath} ({binBytes:N0} bytes): the .bin is truncated or belongs to another index");
                    if (pointer != offset)
                        throw Bad(IdxPath, $"sequence {i} starts at byte {pointer:N0}, expected {offset:N0} (sequences must lie back to back in {BinPath})");
                    offset += (long)length * size;
                }
            }
        }
        finally
        {
            ArrayPool<int>.Shared.Return(lengths);
            ArrayPool<long>.Shared.Return(pointers);
        }
        if (offset != binBytes)
            throw Bad(BinPath, $"{binBytes:N0} bytes, but its index {IdxPath} describes {offset:N0}: the .bin does not belong to this index");
        return offset / size;
    }

    void CheckDocumentIndices()
    {
        const int chunk = 1 << 14;
        long previous = -1, count = DocumentCount + 1;
        long[] values = ArrayPool<long>.Shared.Rent(chunk);
        try
        {
            for (long first = 0; first < count; first += chunk)
            {
                int n = (int)Math.Min(chunk, count - first);
                _index.SafeMemoryMappedViewHandle.ReadSpan((ulong)(_documentsAt + 8 * first), values.AsSpan(0, n));
                for (int k = 0; k < n; k++)
                {
                    long value = values[k];
                    if ((first + k == 0 && value != 0) || value < previous || value > SequenceCount)
                        throw Bad(IdxPath, $"document_indices[{first + k}] = {value} is out of order (it must start at 0 and rise to the sequence count {SequenceCount:N0})");
                    previous = value;
                }
            }
        }
        finally
        {
            ArrayPool<long>.Shared.Return(values);
        }
        if (previous != SequenceCount)
            throw Bad(IdxPath, $"document_indices ends at {previous}, not at the sequence count {SequenceCount:N0}");
    }

    static DataFileException Bad(string path, string problem) => new(path, 0, problem);

    /// <summary>Releases the memory maps.</summary>
    public void Dispose()
    {
        _bin?.Dispose();
        _binMap?.Dispose();
        _index?.Dispose();
        _indexMap?.Dispose();
    }
}
