namespace MLNetFinetune.TorchSharp.Training;

/// <summary>Temperature, top-k and top-p (nucleus) sampling over one position's logits, seeded.</summary>
public static class Sampling
{
    /// <summary>Draws a token id from <paramref name="logits"/> as <paramref name="options"/> say.</summary>
    public static long Sample(float[] logits, GenerationOptions options, Random random)
    {
        int n = logits.Length;
        var order = Enumerable.Range(0, n).ToArray();
        Array.Sort(order, (a, b) => logits[b].CompareTo(logits[a])); // most likely first
        int keep = options.TopK > 0 ? Math.Min(options.TopK, n) : n;
        double max = logits[order[0]];
        var probabilities = new double[keep];
        double total = 0;
        for (int i = 0; i < keep; i++) total += probabilities[i] = Math.Exp((logits[order[i]] - max) / options.Temperature);
        if (options.TopP < 1)
        {
            double cumulative = 0;
            for (int i = 0; i < keep; i++)
            {
                cumulative += probabilities[i] / total;
                if (cumulative >= options.TopP) { keep = i + 1; break; }
            }
            total = probabilities.Take(keep).Sum();
        }
        double draw = random.NextDouble() * total;
        for (int i = 0; i < keep; i++)
        {
            draw -= probabilities[i];
            if (draw <= 0) return order[i];
        }
        return order[keep - 1];
    }
}
