namespace MLNetFinetune.Export;

/// <summary>
/// Weight-only quantization of an ONNX export (<see cref="OnnxExportOptions.Quantization"/>): every linear layer's weight
/// becomes 4- or 8-bit integers in blocks along its input dimension, each block with its own scale and zero point, run by
/// ONNX Runtime's <c>com.microsoft.MatMulNBits</c>; the input embedding becomes a <c>GatherBlockQuantized</c> over the same
/// kind of rows. Activations, norms, biases and the KV cache stay float. Batch-1 decoding reads every weight once per
/// token, so 4 bits in blocks of 128 read ~7× fewer bytes than float32 (scales and zero points included).
/// </summary>
public sealed record WeightQuantization
{
    /// <summary>Bits per weight: 4 (default) or 8.</summary>
    public int Bits { get; init; } = 4;

    /// <summary>
    /// Weights per block sharing a scale and zero point, along the input dimension: a power of two ≥ 16. Default 128, the
    /// group size AWQ and GPTQ checkpoints use: float32 scales cost 0.25 bit per weight. 32 costs 1 bit, a 20% larger
    /// file, read on every token, for slightly closer weights (docs/BENCHMARKS.md, Quantized export).
    /// </summary>
    public int BlockSize { get; init; } = 128;

    /// <summary>
    /// MatMulNBits' <c>accuracy_level</c>: the precision activations are computed in. 4 (default) lets the CPU provider
    /// quantize each block of activations to int8 and use integer dot products (the fast path on AVX2/AVX-512 VNNI/NEON);
    /// 1 computes in float32 (slower, exact against dequantized weights); 0 leaves it to the provider. GPUs ignore it.
    /// </summary>
    public int AccuracyLevel { get; init; } = 4;

    /// <summary>
    /// Quantize the input embedding too (default true): a vocabulary-sized table is a large share of a small model's file.
    /// It stays float when the hidden size is not a whole number of blocks (GatherBlockQuantized reads unpadded rows).
    /// </summary>
    public bool Embedding { get; init; } = true;

    /// <summary>
    /// Quantize an untied output head (default true): at batch 1 it is the largest matrix read per token. A tied head is
    /// the embedding's table, quantized when the embedding is.
    /// </summary>
    public bool Head { get; init; } = true;

    /// <summary>
    /// Activation statistics of the model on calibration text (<c>ActivationCalibration.Collect</c>, ONNX Runtime
    /// package): with them each linear layer's input channels are scaled before rounding by the factor that keeps the
    /// layer's output closest to float on those activations (AWQ's search), at the cost of one elementwise multiply per
    /// layer. Null (default): round to nearest. The head and the embedding are always rounded to nearest.
    /// </summary>
    public ActivationStatistics? Calibration { get; init; }

    /// <summary>4-bit weights, blocks of 128, int8 compute on CPU.</summary>
    public static WeightQuantization Int4 => new();

    /// <summary>8-bit weights, blocks of 128, int8 compute on CPU.</summary>
    public static WeightQuantization Int8 => new() { Bits = 8 };

    /// <summary>The quantization a CLI names: <c>int4</c> or <c>int8</c>; <c>none</c> (or null) gives null.</summary>
    public static WeightQuantization? Parse(string? name) => name?.ToLowerInvariant() switch
    {
        null or "" or "none" or "fp32" or "float" => null,
        "int4" => Int4,
        "int8" => Int8,
        _ => throw new ArgumentException($"Unknown quantization '{name}': use int4, int8 or none."),
    };

    /// <summary>The bits as a name: <c>int4</c> or <c>int8</c>.</summary>
    public override string ToString() => $"int{Bits}";

    internal void Validate()
    {
        if (Bits is not (4 or 8)) throw new ArgumentException($"Quantization bits must be 4 or 8, not {Bits}.");
        if (BlockSize < 16 || (BlockSize & (BlockSize - 1)) != 0) throw new ArgumentException($"The quantization block size must be a power of two of at least 16, not {BlockSize}.");
        if (AccuracyLevel is < 0 or > 4) throw new ArgumentException($"The accuracy level must be 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8), not {AccuracyLevel}.");
    }
}

/// <summary>
/// A matrix of <c>Rows</c> × <c>Columns</c> quantized in blocks along each row, in the layout MatMulNBits and
/// GatherBlockQuantized read: <see cref="Data"/> is [rows, blocks, block·bits/8] bytes with two 4-bit values per byte
/// (the first in the low nibble), the last block zero-padded; <see cref="Scales"/> is [rows, blocks];
/// <see cref="ZeroPoints"/> [rows, ⌈blocks·bits/8⌉] bytes packed the same way. A weight is (q − zero point) · scale.
/// </summary>
internal sealed record BlockQuantizedMatrix(int Rows, int Columns, int Bits, int BlockSize, byte[] Data, float[] Scales, byte[] ZeroPoints)
{
    public int Blocks => (Columns + BlockSize - 1) / BlockSize;

    public int BlobBytes => BlockSize * Bits / 8;

    public int ZeroPointBytesPerRow => (Blocks * Bits + 7) / 8;

    /// <summary>
    /// Round-to-nearest, asymmetric: each block's range is widened to include 0 (so 0 stays exact), its scale is
    /// range / (2^bits − 1) and its zero point the level that 0 maps to, as ONNX Runtime's own block quantizer does.
    /// </summary>
    public static BlockQuantizedMatrix Quantize(float[] weights, int rows, int columns, int bits, int blockSize)
    {
        var shape = new BlockQuantizedMatrix(rows, columns, bits, blockSize, [], [], []);
        var q = shape with
        {
            Data = new byte[(long)rows * shape.Blocks * shape.BlobBytes], Scales = new float[(long)rows * shape.Blocks], ZeroPoints = new byte[(long)rows * shape.ZeroPointBytesPerRow],
        };
        Parallel.For(0, rows, r => q.QuantizeRow(weights.AsSpan((int)((long)r * columns), columns), r));
        return q;
    }

    void QuantizeRow(ReadOnlySpan<float> row, int r)
    {
        int levels = (1 << Bits) - 1;
        for (int b = 0; b < Blocks; b++)
        {
            var block = row.Slice(b * BlockSize, Math.Min(BlockSize, Columns - b * BlockSize));
            float min = 0, max = 0;
            foreach (float v in block) { min = Math.Min(min, v); max = Math.Max(max, v); }
            float scale = (max - min) / levels;
            int zero = scale == 0 ? 0 : Math.Clamp((int)MathF.Round(-min / scale), 0, levels);
            if (scale == 0) scale = 1; // an all-zero block: any scale dequantizes it exactly
            Scales[(long)r * Blocks + b] = scale;
            SetNibbleOrByte(ZeroPoints, (long)r * ZeroPointBytesPerRow, b, zero);
            long blobStart = ((long)r * Blocks + b) * BlobBytes;
            for (int i = 0; i < BlockSize; i++)
            {
                int level = i < block.Length ? Math.Clamp((int)MathF.Round(block[i] / scale) + zero, 0, levels) : zero; // padding is 0
                SetNibbleOrByte(Data, blobStart, i, level);
            }
        }
    }

    void SetNibbleOrByte(byte[] bytes, long start, int index, int value)
    {
        if (Bits == 8) bytes[start + index] = (byte)value;
        else bytes[start + index / 2] |= (byte)(index % 2 == 0 ? value : value << 4);
    }

    int Get(byte[] bytes, long start, int index) => Bits == 8 ? bytes[start + index] : (bytes[start + index / 2] >> (index % 2 * 4)) & 0xF;

    /// <summary>The float weights the quantized ones stand for, [rows, columns].</summary>
    public float[] Dequantize()
    {
        var w = new float[(long)Rows * Columns];
        Parallel.For(0, Rows, r =>
        {
            for (int c = 0; c < Columns; c++)
            {
                int b = c / BlockSize;
                int level = Get(Data, ((long)r * Blocks + b) * BlobBytes, c % BlockSize);
                int zero = Get(ZeroPoints, (long)r * ZeroPointBytesPerRow, b);
                w[(long)r * Columns + c] = (level - zero) * Scales[(long)r * Blocks + b];
            }
        });
        return w;
    }
}
