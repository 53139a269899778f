namespace MLNetFinetune.Tests;

/// <summary>Comparing logits of two implementations.</summary>
static class Logits
{
    /// <summary>The largest absolute difference between two logit arrays of the same length.</summary>
    public static float MaxDiff(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        float worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        return worst;
    }
}
