using Microsoft.ML.Data;

namespace MLNetFinetune.Tokenization;

/// <summary>Which end of a sequence loses tokens when it is too long.</summary>
public enum TruncationSide
{
    /// <summary>Keep the beginning (default for plain text).</summary>
    Right,
    /// <summary>Keep the end (what the course's lab does; right for prompts, whose end leads into the answer).</summary>
    Left,
}

/// <summary>Which end of a sequence receives padding.</summary>
public enum PaddingSide
{
    /// <summary>Pad after the tokens (training).</summary>
    Right,
    /// <summary>Pad before the tokens, so every row's last token is real (batched generation).</summary>
    Left,
}

/// <summary>How a single row is padded (padding to the longest row of a batch is <see cref="TokenBatch"/>'s job).</summary>
public enum PaddingMode
{
    /// <summary>No padding.</summary>
    None,
    /// <summary>Exactly <c>PadTo</c> tokens: shorter rows are padded, longer ones truncated.</summary>
    Fixed,
    /// <summary>Up to the next multiple of <c>PadTo</c> (e.g. 8, for tensor-core friendly shapes).</summary>
    MultipleOf,
}

/// <summary>Truncation and padding arithmetic shared by the tokenize transforms and the batch collator.</summary>
public static class TokenSequences
{
    /// <summary>The label value a loss ignores (PyTorch's and Hugging Face's -100).</summary>
    public const int IgnoreIndex = -100;

    /// <summary>Cuts <paramref name="ids"/> to at most <paramref name="keep"/> tokens (0 empties it), dropping from the given side.</summary>
    public static void Truncate(List<int> ids, int keep, TruncationSide side)
    {
        keep = Math.Max(0, keep);
        if (ids.Count <= keep) return;
        if (side == TruncationSide.Right) ids.RemoveRange(keep, ids.Count - keep);
        else ids.RemoveRange(0, ids.Count - keep);
    }

    /// <summary>The padded length of a sequence of <paramref name="length"/> tokens.</summary>
    public static int PaddedLength(int length, PaddingMode mode, int padTo) => mode switch
    {
        PaddingMode.None => length,
        PaddingMode.Fixed => padTo,
        PaddingMode.MultipleOf => (length + padTo - 1) / padTo * padTo,
        _ => throw new ArgumentOutOfRangeException(nameof(mode)),
    };

    /// <summary>Writes <paramref name="values"/> padded with <paramref name="pad"/> to <paramref name="length"/> into <paramref name="destination"/>.</summary>
    public static void Pad(IReadOnlyList<int> values, int length, int pad, PaddingSide side, Span<int> destination)
    {
        if (values.Count > length) throw new ArgumentException($"{values.Count} values do not fit a padded length of {length}.", nameof(values));
        int offset = side == PaddingSide.Left ? length - values.Count : 0;
        destination[..length].Fill(pad);
        for (int i = 0; i < values.Count; i++) destination[offset + i] = values[i];
    }

    /// <summary>Fills an ML.NET vector, reusing its buffer.</summary>
    internal static void Set(ref VBuffer<int> vector, ReadOnlySpan<int> values)
    {
        var editor = VBufferEditor.Create(ref vector, values.Length);
        values.CopyTo(editor.Values);
        vector = editor.Commit();
    }

    /// <summary>The variable-length int vector type of id, mask and label columns.</summary>
    public static VectorDataViewType IdsType { get; } = new(NumberDataViewType.Int32);
}
