using System.Numerics.Tensors;

namespace MLNetFinetune.Export;

/// <summary>
/// What each linear layer of a model receives on calibration text: a sample of its input rows, by the layer's weight
/// name (<c>gpt_neox.layers.0.mlp.dense_h_to_4h.weight</c>, …). <c>ActivationCalibration.Collect</c> (ONNX Runtime
/// package) runs the model over text to gather them; <see cref="WeightQuantization.Calibration"/> uses them.
/// </summary>
public sealed class ActivationStatistics(IReadOnlyDictionary<string, float[]> inputs, int tokens)
{
    /// <summary>Each layer's sampled input rows, row-major [rows, input features].</summary>
    public IReadOnlyDictionary<string, float[]> Inputs { get; } = inputs;

    /// <summary>How many tokens of text the rows were sampled from.</summary>
    public int Tokens { get; } = tokens;
}

/// <summary>
/// AWQ's search (Lin et al., 2023, "Activation-aware Weight Quantization"): input channels that carry large activations
/// matter most to a layer's output, so before rounding each weight column is multiplied by s = mean|x|^α (normalized) and
/// the layer's input divided by s, which leaves the float product unchanged and gives those channels finer levels. α is
/// chosen from a grid to minimize ‖X·Wᵀ − (X/s)·Q(W·s)ᵀ‖² on the calibration rows; α = 0 is round-to-nearest, so the
/// result is never worse than it on those rows. Written here because no served .NET library quantizes weights.
/// </summary>
internal static class ActivationAwareScaling
{
    const int Grid = 20;

    /// <summary>The quantized weights and the per-input-channel divisor for the layer's input (null: none helped).</summary>
    public static (BlockQuantizedMatrix Weights, float[]? InputScale, double Error, double RoundToNearestError) Quantize(
        float[] weights, int rows, int columns, float[] inputs, WeightQuantization q)
    {
        int samples = inputs.Length / columns;
        var meanMagnitude = new float[columns];
        for (int r = 0; r < samples; r++)
            for (int c = 0; c < columns; c++) meanMagnitude[c] += Math.Abs(inputs[r * columns + c]) / samples;

        var best = BlockQuantizedMatrix.Quantize(weights, rows, columns, q.Bits, q.BlockSize);
        double bestError = OutputError(weights, best.Dequantize(), null, inputs, rows, columns), rtn = bestError;
        float[]? bestScale = null;
        for (int step = 1; step <= Grid; step++)
        {
            double alpha = (double)step / Grid;
            var scale = meanMagnitude.Select(m => (float)Math.Pow(Math.Max(m, 1e-6f), alpha)).ToArray();
            float norm = MathF.Sqrt(scale.Max() * scale.Min());
            for (int c = 0; c < columns; c++) scale[c] /= norm;
            var scaled = new float[weights.Length];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < columns; c++) scaled[(long)r * columns + c] = weights[(long)r * columns + c] * scale[c];
            var candidate = BlockQuantizedMatrix.Quantize(scaled, rows, columns, q.Bits, q.BlockSize);
            double error = OutputError(weights, candidate.Dequantize(), scale, inputs, rows, columns);
            if (error < bestError) (best, bestError, bestScale) = (candidate, error, scale);
        }
        return (best, bestScale, bestError, rtn);
    }

    // Σ over sample rows and outputs of (x·w − (x/s)·ŵ)², with ŵ the dequantized (scaled) weights: per output row, the
    // difference row w − ŵ/s dotted with every sample.
    static double OutputError(float[] weights, float[] dequantized, float[]? scale, float[] inputs, int rows, int columns)
    {
        int samples = inputs.Length / columns;
        var perRow = new double[rows];
        Parallel.For(0, rows, () => new float[columns], (r, _, diff) =>
        {
            for (int c = 0; c < columns; c++)
                diff[c] = weights[(long)r * columns + c] - dequantized[(long)r * columns + c] / (scale?[c] ?? 1f);
            double sum = 0;
            for (int s = 0; s < samples; s++)
            {
                float d = TensorPrimitives.Dot(inputs.AsSpan(s * columns, columns), diff);
                sum += (double)d * d;
            }
            perRow[r] = sum;
            return diff;
        }, _ => { });
        return perRow.Sum();
    }
}
