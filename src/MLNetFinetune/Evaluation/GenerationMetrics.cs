using System.Globalization;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Evaluation;

/// <summary>How answers are normalised before they are compared.</summary>
public sealed record AnswerNormalization
{
    /// <summary>Strip surrounding whitespace (the course's <c>strip()</c>). Default true.</summary>
    public bool Trim { get; init; } = true;

    /// <summary>Compare case-insensitively. Default false.</summary>
    public bool IgnoreCase { get; init; }

    /// <summary>Drop punctuation and collapse whitespace (SQuAD-style). Default false.</summary>
    public bool IgnorePunctuation { get; init; }

    /// <summary>The normalised form of <paramref name="answer"/>.</summary>
    public string Apply(string answer)
    {
        string s = answer;
        if (IgnorePunctuation)
        {
            var sb = new StringBuilder(s.Length);
            foreach (char c in s) if (!char.IsPunctuation(c) && !char.IsSymbol(c)) sb.Append(c);
            s = string.Join(' ', sb.ToString().Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries));
        }
        if (Trim) s = s.Trim();
        if (IgnoreCase) s = s.ToLowerInvariant();
        return s;
    }
}

/// <summary>A rate with its count and a 95% Wilson score interval (honest for small samples and for rates near 0 or 1).</summary>
/// <param name="Hits">Successes.</param>
/// <param name="Count">Trials.</param>
public sealed record Rate(long Hits, long Count)
{
    /// <summary>Hits ÷ count (NaN without trials).</summary>
    public double Value => Count == 0 ? double.NaN : (double)Hits / Count;

    /// <summary>Lower end of the 95% Wilson interval.</summary>
    public double Low => Hits == 0 && Count > 0 ? 0 : Wilson(-1);

    /// <summary>Upper end of the 95% Wilson interval.</summary>
    public double High => Hits == Count && Count > 0 ? 1 : Wilson(+1);

    double Wilson(int sign)
    {
        if (Count == 0) return double.NaN;
        const double z = 1.959963984540054;
        double p = Value, n = Count;
        double centre = (p + z * z / (2 * n)) / (1 + z * z / n);
        double half = z * Math.Sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n);
        return Math.Clamp(centre + sign * half, 0, 1);
    }

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"{100 * Value:F1}% ({Hits}/{Count}, 95% CI {100 * Low:F1}–{100 * High:F1}%)");
}

/// <summary>Metrics of generated answers against expected ones.</summary>
/// <param name="Count">Rows scored.</param>
/// <param name="ExactMatch">Rows whose normalised answer equals the expected one.</param>
/// <param name="TokenF1">Mean token-overlap F1 (SQuAD's definition over whitespace tokens of the normalised strings).</param>
/// <param name="MeanLoss">Mean of the loss column, when there is one.</param>
public sealed record GenerationMetrics(long Count, Rate ExactMatch, double TokenF1, double? MeanLoss)
{
    /// <summary>exp(mean loss).</summary>
    public double? Perplexity => MeanLoss is { } l ? Math.Exp(l) : null;

    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant($"exact match {ExactMatch}, token F1 {TokenF1:F3}")
        + (MeanLoss is { } l ? FormattableString.Invariant($", loss {l:F3}, perplexity {Math.Exp(l):F2}") : "") + $", {Count} rows";
}

/// <summary>One row's expected answer, generated answer and (when scored) response loss.</summary>
public sealed record ScoredAnswer(string Expected, string Generated, float? Loss)
{
    /// <summary>Whether the generated answer equals the expected one after <paramref name="normalization"/>.</summary>
    public bool IsExact(AnswerNormalization normalization) => normalization.Apply(Generated) == normalization.Apply(Expected);
}

/// <summary>Scores generated text against expected answers over an <see cref="IDataView"/>.</summary>
public static class GenerationEvaluator
{
    /// <summary>
    /// Exact match and token F1 of <paramref name="generatedColumn"/> against <paramref name="labelColumn"/>, and the mean
    /// of <paramref name="lossColumn"/> when it exists.
    /// </summary>
    public static GenerationMetrics Evaluate(IDataView scored, string labelColumn, string generatedColumn = "Generated",
        string? lossColumn = "Loss", AnswerNormalization? normalization = null)
    {
        return Score(ReadAnswers(scored, labelColumn, generatedColumn, lossColumn), normalization);
    }

    /// <summary>The metrics of answers already read (see <see cref="ReadAnswers"/>).</summary>
    public static GenerationMetrics Score(IEnumerable<ScoredAnswer> answers, AnswerNormalization? normalization = null)
    {
        normalization ??= new AnswerNormalization();
        long count = 0, hits = 0, losses = 0;
        double f1 = 0, lossSum = 0;
        foreach (var (expected, generated, loss) in answers)
        {
            string a = normalization.Apply(expected), b = normalization.Apply(generated);
            count++;
            if (a == b) hits++;
            f1 += TokenF1(a, b);
            if (loss is { } l && float.IsFinite(l)) { lossSum += l; losses++; }
        }
        return new GenerationMetrics(count, new Rate(hits, count), count == 0 ? double.NaN : f1 / count, losses > 0 ? lossSum / losses : null);
    }

    /// <summary>
    /// Exact match within each group (an attribute, a category; <paramref name="groups"/> aligned with the answers), in
    /// order of first appearance: where a model's knowledge or behaviour holds and where it does not.
    /// </summary>
    public static IReadOnlyList<(string Group, Rate ExactMatch)> ExactMatchByGroup(IReadOnlyList<ScoredAnswer> answers, IReadOnlyList<string> groups,
        AnswerNormalization? normalization = null)
    {
        if (answers.Count != groups.Count) throw new ArgumentException($"{answers.Count} answers but {groups.Count} group labels; give one label per answer.", nameof(groups));
        normalization ??= new AnswerNormalization();
        return groups.Select((g, i) => (Group: g, Hit: answers[i].IsExact(normalization))).GroupBy(x => x.Group)
            .Select(g => (g.Key, new Rate(g.LongCount(x => x.Hit), g.LongCount()))).ToList();
    }

    /// <summary>
    /// Reads the label, generated and (when present) loss columns in one pass: generation is lazy and costly, so a view
    /// is cursored once.
    /// </summary>
    public static IReadOnlyList<ScoredAnswer> ReadAnswers(IDataView scored, string labelColumn, string generatedColumn, string? lossColumn)
    {
        SchemaShapes.RequireText(scored.Schema, labelColumn, "Evaluation");
        SchemaShapes.RequireText(scored.Schema, generatedColumn, "Evaluation");
        var loss = lossColumn == null ? null : scored.Schema.GetColumnOrNull(lossColumn);
        var columns = new List<DataViewSchema.Column> { scored.Schema[labelColumn], scored.Schema[generatedColumn] };
        if (loss != null) columns.Add(loss.Value);
        using var cursor = scored.GetRowCursor(columns);
        var expected = cursor.GetGetter<ReadOnlyMemory<char>>(scored.Schema[labelColumn]);
        var generated = cursor.GetGetter<ReadOnlyMemory<char>>(scored.Schema[generatedColumn]);
        var lossGetter = loss != null ? cursor.GetGetter<float>(loss.Value) : null;
        ReadOnlyMemory<char> e = default, g = default;
        float l = 0;
        var rows = new List<ScoredAnswer>();
        while (cursor.MoveNext())
        {
            expected(ref e);
            generated(ref g);
            float? rowLoss = null;
            if (lossGetter != null)
            {
                lossGetter(ref l);
                rowLoss = l;
            }
            rows.Add(new ScoredAnswer(e.ToString(), g.ToString(), rowLoss));
        }
        return rows;
    }

    /// <summary>SQuAD's token F1: harmonic mean of precision and recall of the shared whitespace tokens (with multiplicity).</summary>
    public static double TokenF1(string expected, string generated)
    {
        var a = expected.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        var b = generated.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (a.Length == 0 || b.Length == 0) return a.Length == b.Length ? 1 : 0;
        var counts = a.GroupBy(t => t).ToDictionary(g => g.Key, g => g.Count());
        int common = 0;
        foreach (string t in b)
            if (counts.TryGetValue(t, out int c) && c > 0) { common++; counts[t] = c - 1; }
        if (common == 0) return 0;
        double precision = (double)common / b.Length, recall = (double)common / a.Length;
        return 2 * precision * recall / (precision + recall);
    }
}
