namespace MLNetFinetune.Generation;

/// <summary>Choosing the next token from one position's logits: greedy, or temperature, top-k and top-p sampling, seeded.</summary>
public static class Sampling
{
    /// <summary>
    /// The next token: applies the repetition penalty to <paramref name="history"/>'s tokens, then takes the argmax
    /// (temperature 0) or samples.
    /// </summary>
    public static long Next(float[] logits, GenerationOptions options, Random random, IEnumerable<long> history, int allowedVocab)
    {
        // Rows past the tokenizer's last id pad the embedding table (Pythia: 50,277 tokens in 50,304 rows); never pick them.
        if (allowedVocab < logits.Length) logits.AsSpan(allowedVocab).Fill(float.NegativeInfinity);
        if (options.RepetitionPenalty != 1.0)
            foreach (long id in history.Distinct())
                logits[id] = logits[id] > 0 ? (float)(logits[id] / options.RepetitionPenalty) : (float)(logits[id] * options.RepetitionPenalty);
        if (options.Temperature <= 0)
        {
            int best = 0;
            for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
            return best;
        }
        return Sample(logits, options, random);
    }

    /// <summary>The text before the first stop sequence, and whether one was found.</summary>
    public static (string Text, bool Stopped) CutAtStop(string text, IReadOnlyList<string> stops)
    {
        int cut = -1;
        foreach (string stop in stops)
        {
            if (stop.Length == 0) continue;
            int at = text.IndexOf(stop, StringComparison.Ordinal);
            if (at >= 0 && (cut < 0 || at < cut)) cut = at;
        }
        return cut < 0 ? (text, false) : (text[..cut], true);
    }

    /// <summary>Draws a token id from <paramref name="logits"/> as <paramref name="options"/> say.</summary>
    public static long Sample(float[] logits, GenerationOptions options, Random random)
    {
        if (options.Temperature <= 0) throw new ArgumentOutOfRangeException(nameof(options), "Sampling needs a positive temperature.");
        int n = logits.Length;
        var order = Enumerable.Range(0, n).ToArray();
        if (options.TopK > 0 || options.TopP < 1)
            Array.Sort(order, (a, b) => logits[b].CompareTo(logits[a])); // most likely first; plain sampling needs no order
        int keep = options.TopK > 0 ? Math.Min(options.TopK, n) : n;
        double max = logits.Max();
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
