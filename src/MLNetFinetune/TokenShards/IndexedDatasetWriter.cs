using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using MLNetFinetune.Data;

namespace MLNetFinetune.TokenShards;

/// <summary>
/// The token types Megatron's indexed dataset stores, with Megatron's numeric codes (the byte after the version in
/// <c>.idx</c>). Only the two a tokenizer's ids need are offered: uint16 halves the files when the vocabulary fits.
/// </summary>
public enum TokenDType : byte
{
    /// <summary>Signed 32-bit ids (Megatron code 4), for vocabularies of 65,500 tokens and more.</summary>
    Int32 = 4,
    /// <summary>Unsigned 16-bit ids (Megatron code 8), for vocabularies under 65,500 tokens.</summary>
    UInt16 = 8,
}

/// <summary>Sizes and names of <see cref="TokenDType"/>, and Megatron's choice between them.</summary>
public static class TokenDTypes
{
    /// <summary>Bytes per token.</summary>
    public static int Size(this TokenDType dtype) => dtype == TokenDType.UInt16 ? 2 : 4;

    /// <summary>The numpy name (<c>uint16</c>, <c>int32</c>), as sidecars and manifests record it.</summary>
    public static string Name(this TokenDType dtype) => dtype == TokenDType.UInt16 ? "uint16" : "int32";

    /// <summary>Parses a numpy name; null for anything else.</summary>
    public static TokenDType? Parse(string name) => name switch { "uint16" => TokenDType.UInt16, "int32" => TokenDType.Int32, _ => null };

    /// <summary>
    /// Megatron's <c>DType.optimal_dtype</c> (preprocess_data's best fitting dtype): uint16 below 65,500 tokens, else int32;
    /// the same threshold, so shards of one vocabulary have the same dtype whichever tool wrote them.
    /// </summary>
    public static TokenDType BestFitting(int vocabSize) => vocabSize < 65500 ? TokenDType.UInt16 : TokenDType.Int32;
}

/// <summary>What <see cref="IndexedDatasetWriter.Write"/> wrote: counts, sizes and SHA-256 (lower-case hex) of both files.</summary>
public sealed record IndexedDatasetFiles(long Documents, long Tokens, long BinBytes, string BinSha256, long IdxBytes, string IdxSha256);

/// <summary>
/// Writes Megatron-LM's MMapIndexedDataset (<c>prefix.bin</c> + <c>prefix.idx</c>) byte for byte as Megatron's
/// <c>IndexedDatasetBuilder</c> and <c>_IndexWriter</c> do, so Megatron, Megatron-DeepSpeed, GPT-NeoX and nanoGPT-style
/// <c>numpy.memmap</c> readers load what this writes. One document is one sequence (document_indices = 0, 1, …, n).
/// </summary>
public static class IndexedDatasetWriter
{
    /// <summary>The 9 bytes every <c>.idx</c> starts with.</summary>
    public static ReadOnlySpan<byte> Magic => "MMIDIDX\0\0"u8;

    /// <summary>The only index version Megatron writes and reads.</summary>
    public const ulong Version = 1;

    /// <summary>Bytes before the sequence lengths: magic, version, dtype code, sequence count, document count.</summary>
    public const int HeaderBytes = 9 + 8 + 1 + 8 + 8;

    /// <summary>
    /// Streams <paramref name="documents"/> (each already ending in its end-of-document id) into <c>prefix.bin</c>, then
    /// writes <c>prefix.idx</c>; each file appears only complete (temp file, then rename), .bin before .idx, and both are
    /// hashed while written so nothing is read back. Only the per-document lengths (4 bytes each) are held in memory.
    /// Ids outside <paramref name="dtype"/>'s range fail rather than wrap.
    /// </summary>
    public static IndexedDatasetFiles Write(string prefix, TokenDType dtype, IEnumerable<ReadOnlyMemory<int>> documents)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(prefix);
        ArgumentNullException.ThrowIfNull(documents);
        var lengths = new List<int>();
        long tokens = 0, binBytes = 0;
        string binSha = "";
        DataFiles.WriteAtomically(prefix + ".bin", stream =>
        {
            using var hashing = new HashingStream(stream);
            byte[] buffer = ArrayPool<byte>.Shared.Rent(1 << 16);
            try
            {
                foreach (var document in documents)
                {
                    WriteTokens(hashing, document.Span, dtype, buffer, prefix, lengths.Count);
                    lengths.Add(document.Length);
                    tokens += document.Length;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            (binBytes, binSha) = (hashing.Length, hashing.Sha256());
        });

        long idxBytes = 0;
        string idxSha = "";
        DataFiles.WriteAtomically(prefix + ".idx", stream =>
        {
            using var hashing = new HashingStream(stream);
            WriteIndex(hashing, dtype, lengths);
            (idxBytes, idxSha) = (hashing.Length, hashing.Sha256());
        });
        return new IndexedDatasetFiles(lengths.Count, tokens, binBytes, binSha, idxBytes, idxSha);
    }

    static void WriteTokens(Stream stream, ReadOnlySpan<int> ids, TokenDType dtype, byte[] buffer, string prefix, int document)
    {
        int size = dtype.Size(), perChunk = buffer.Length / size;
        for (int start = 0; start < ids.Length; start += perChunk)
        {
            var chunk = ids.Slice(start, Math.Min(perChunk, ids.Length - start));
            var bytes = buffer.AsSpan(0, chunk.Length * size);
            for (int i = 0; i < chunk.Length; i++)
            {
                int id = chunk[i];
                if (id < 0 || (dtype == TokenDType.UInt16 && id > ushort.MaxValue))
                    throw new ArgumentOutOfRangeException(nameof(ids), $"{prefix}.bin: document {document} has id {id}, which {dtype.Name()} cannot hold.");
                if (dtype == TokenDType.UInt16) BinaryPrimitives.WriteUInt16LittleEndian(bytes[(i * 2)..], (ushort)id);
                else BinaryPrimitives.WriteInt32LittleEndian(bytes[(i * 4)..], id);
            }
            stream.Write(bytes);
        }
    }

    // _IndexWriter.write: header, int32 sequence_lengths, int64 sequence_pointers (byte offsets), int64 document_indices.
    static void WriteIndex(Stream stream, TokenDType dtype, List<int> lengths)
    {
        Span<byte> header = stackalloc byte[HeaderBytes];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteUInt64LittleEndian(header[9..], Version);
        header[17] = (byte)dtype;
        BinaryPrimitives.WriteUInt64LittleEndian(header[18..], (ulong)lengths.Count);
        BinaryPrimitives.WriteUInt64LittleEndian(header[26..], (ulong)lengths.Count + 1);
        stream.Write(header);

        // Not disposed: that would close the hashing stream before its hash is read.
        var buffered = new BufferedStream(stream, 1 << 16);
        Span<byte> eight = stackalloc byte[8];
        foreach (int length in lengths)
        {
            BinaryPrimitives.WriteInt32LittleEndian(eight, length);
            buffered.Write(eight[..4]);
        }
        long pointer = 0;
        foreach (int length in lengths)
        {
            BinaryPrimitives.WriteInt64LittleEndian(eight, pointer);
            buffered.Write(eight);
            pointer += (long)length * dtype.Size();
        }
        for (long document = 0; document <= lengths.Count; document++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(eight, document);
            buffered.Write(eight);
        }
        buffered.Flush();
    }

    /// <summary>Passes writes through to the file while hashing them (SHA-256) and counting bytes.</summary>
    sealed class HashingStream(Stream inner) : Stream
    {
        readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long _length;

        public string Sha256() => Convert.ToHexStringLower(_hash.GetHashAndReset());

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            _hash.AppendData(buffer);
            inner.Write(buffer);
            _length += buffer.Length;
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Flush() => inner.Flush();
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _length;
        public override long Position { get => _length; set => throw new NotSupportedException(); }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing) _hash.Dispose();
            base.Dispose(disposing);
        }
    }
}
