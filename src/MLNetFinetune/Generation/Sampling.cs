namespace MLNetFinetune.Generation;

/// <summary>Choosing the next token from one position's logits: greedy, or temperature, top-k and top-p sampling, seeded.</summary>
public static class Sampling
{
    /// <summary>
    /// The next token: applies the repetition penalty to <paramref name="history"/>'s tokens, then takes the argmax
    /// (temperature 0) or samples. Only sampling and the penalty need a copy of the logits; greedy decoding reads them.
    /// </summary>
    public static long Next(ReadOnlySpan<float> logits, GenerationOptions options, Random random, IEnumerable<long> history, int allowedVocab)
    {
        if (options.Temperature <= 0 && options.RepetitionPenalty == 1.0) return Greedy(logits, allowedVocab);
        var scores = logits.ToArray();
        // Rows past the tokenizer's last id pad the embedding table (Pythia: 50,277 tokens in 50,304 rows); never pick them.
        if (allowedVocab < scores.Length) scores.AsSpan(allowedVocab).Fill(float.NegativeInfinity);
        if (options.RepetitionPenalty != 1.0)
            foreach (long id in history.Distinct())
                scores[id] = scores[id] > 0 ? (float)(scores[id] / options.RepetitionPenalty) : (float)(scores[id] * options.RepetitionPenalty);
        return options.Temperature <= 0 ? Greedy(scores, allowedVocab) : Sample(scores, options, random);
    }

    /// <summary>The most likely token among the first <paramref name="allowedVocab"/> (the first of equals).</summary>
    public static long Greedy(ReadOnlySpan<float> logits, int allowedVocab)
    {
        var allowed = logits[..Math.Min(allowedVocab, logits.Length)];
        int best = 0;
        for (int i = 1; i < allowed.Length; i++) if (allowed[i] > allowed[best]) best = i;
        return best;
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
