namespace MLNetFinetune.Tokenization;

/// <summary>A rectangular batch of token sequences, row-major, as a model consumes it.</summary>
/// <param name="Rows">Number of sequences.</param>
/// <param name="Length">Tokens per row after padding.</param>
/// <param name="Ids">Token ids, <c>Rows × Length</c>.</param>
/// <param name="AttentionMask">1 for real tokens, 0 for padding.</param>
/// <param name="Labels">Labels padded with <see cref="TokenSequences.IgnoreIndex"/>, when labels were given.</param>
public sealed record TokenBatch(int Rows, int Length, int[] Ids, int[] AttentionMask, int[]? Labels)
{
    /// <summary>
    /// Pads sequences to the longest of them (rounded up to a multiple of <paramref name="multipleOf"/> when given),
    /// on the right for training or the left for generation. <paramref name="labels"/>, when given, pair with the
    /// sequences one to one and are padded with the ignore index.
    /// </summary>
    public static TokenBatch Pad(IReadOnlyList<IReadOnlyList<int>> sequences, int padId, PaddingSide side = PaddingSide.Right,
        int multipleOf = 0, IReadOnlyList<IReadOnlyList<int>>? labels = null)
    {
        ArgumentNullException.ThrowIfNull(sequences);
        if (sequences.Count == 0) throw new ArgumentException("A batch needs at least one sequence.", nameof(sequences));
        if (labels != null && labels.Count != sequences.Count)
            throw new ArgumentException($"{labels.Count} label rows for {sequences.Count} sequences.", nameof(labels));
        int longest = sequences.Max(s => s.Count);
        int length = multipleOf > 0 ? TokenSequences.PaddedLength(longest, PaddingMode.MultipleOf, multipleOf) : longest;
        var ids = new int[sequences.Count * length];
        var mask = new int[ids.Length];
        var paddedLabels = labels == null ? null : new int[ids.Length];
        for (int r = 0; r < sequences.Count; r++)
        {
            var row = sequences[r];
            TokenSequences.Pad(row, length, padId, side, ids.AsSpan(r * length, length));
            mask.AsSpan(r * length + (side == PaddingSide.Left ? length - row.Count : 0), row.Count).Fill(1);
            if (paddedLabels != null)
            {
                if (labels![r].Count != row.Count)
                    throw new ArgumentException($"Row {r} has {row.Count} ids but {labels[r].Count} labels.", nameof(labels));
                TokenSequences.Pad(labels[r], length, TokenSequences.IgnoreIndex, side, paddedLabels.AsSpan(r * length, length));
            }
        }
        return new TokenBatch(sequences.Count, length, ids, mask, paddedLabels);
    }

    /// <summary>Row <paramref name="r"/> of the ids.</summary>
    public ReadOnlySpan<int> Row(int r) => Ids.AsSpan(r * Length, Length);
}
