namespace MLNetFinetune.ModelFiles;

/// <summary>
/// Rotary position embedding's inverse frequencies, in one place for the TorchSharp model and the ONNX export, so that
/// both rotate by the same angles (bit for bit) without the export needing libtorch.
/// </summary>
public static class RotaryFrequencies
{
    /// <summary>
    /// <c>1 / θ^(2i/d)</c> for i &lt; d/2, computed in float32 as HF does (the power in float32, then its reciprocal), then
    /// rescaled by <paramref name="scaling"/> when given. PyTorch's vectorised pow may differ from this one by an ulp in
    /// a few entries of a wide head; the angles it moves are within float32's own rounding of <c>position × frequency</c>.
    /// </summary>
    public static float[] Inverse(int dim, double theta, RopeScaling? scaling = null)
    {
        float[] inverse = Enumerable.Range(0, (dim + 1) / 2).Select(i => 1f / MathF.Pow((float)theta, 2 * i / (float)dim)).ToArray();
        return scaling?.Apply(inverse) ?? inverse;
    }

    /// <summary>The model's: <see cref="ModelConfig.RotaryDim"/> dimensions at <see cref="ModelConfig.RotaryBase"/>, with the Llama family's <c>rope_scaling</c>.</summary>
    public static float[] Of(ModelConfig c) => Inverse(c.RotaryDim, c.RotaryBase, c.IsGptNeoX ? null : c.RopeScaling);
}
