using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Tokenization;

/// <summary>Options of the tokenize transform: text column → token ids (and an attention mask).</summary>
public sealed class TokenizeOptions
{
    /// <summary>The tokenizer.</summary>
    public required TextTokenizer Tokenizer { get; init; }

    /// <summary>The text column. Default <c>Text</c>.</summary>
    public string InputColumnName { get; init; } = "Text";

    /// <summary>The ids column (variable-length vector of Int32). Default <c>InputIds</c>.</summary>
    public string OutputColumnName { get; init; } = "InputIds";

    /// <summary>The attention-mask column (1 for tokens, 0 for padding); null for none. Default <c>AttentionMask</c>.</summary>
    public string? AttentionMaskColumnName { get; init; } = "AttentionMask";

    /// <summary>
    /// Put the beginning-of-sequence token first (GPT-NeoX uses <c>&lt;|endoftext|&gt;</c> for it). Set it to the
    /// tokenizer's <see cref="TextTokenizer.AddsBos"/> to get the ids Hugging Face encodes (Llama models expect BOS).
    /// </summary>
    public bool AddBos { get; init; }

    /// <summary>Put the end-of-sequence token last.</summary>
    public bool AddEos { get; init; }

    /// <summary>Longest sequence kept, special tokens included; 0 (default) keeps all.</summary>
    public int MaxLength { get; init; }

    /// <summary>Which end loses tokens beyond <see cref="MaxLength"/>. Default right.</summary>
    public TruncationSide Truncation { get; init; } = TruncationSide.Right;

    /// <summary>Per-row padding; padding to the longest row of a batch is done by <see cref="TokenBatch"/>.</summary>
    public PaddingMode Padding { get; init; } = PaddingMode.None;

    /// <summary>The length (Fixed) or the multiple (MultipleOf) to pad to.</summary>
    public int PadTo { get; init; }

    /// <summary>Which end receives padding. Default right.</summary>
    public PaddingSide PaddingSide { get; init; } = PaddingSide.Right;

    internal void Validate()
    {
        ArgumentNullException.ThrowIfNull(Tokenizer);
        if (MaxLength < 0) throw new ArgumentOutOfRangeException(nameof(MaxLength), "MaxLength must be 0 (no limit) or positive.");
        int specials = (AddBos ? 1 : 0) + (AddEos ? 1 : 0);
        if (MaxLength > 0 && MaxLength <= specials) throw new ArgumentOutOfRangeException(nameof(MaxLength), $"MaxLength {MaxLength} leaves no room for text beside BOS/EOS.");
        if (Padding == PaddingMode.Fixed && PadTo <= specials) throw new ArgumentOutOfRangeException(nameof(PadTo), $"PadTo {PadTo} leaves no room for text beside BOS/EOS.");
        if (OutputColumnName == AttentionMaskColumnName) throw new ArgumentException("The ids and attention-mask columns need different names.");
        if (Padding != PaddingMode.None && PadTo <= 0) throw new ArgumentOutOfRangeException(nameof(PadTo), $"Padding {Padding} needs a positive PadTo.");
        if (AddBos && Tokenizer.BosId == null)
            throw new ArgumentException($"AddBos needs a beginning-of-sequence token, which tokenizer '{Tokenizer.Source}' lacks.");
        if (AddEos && Tokenizer.EosId == null)
            throw new ArgumentException($"AddEos needs an end-of-sequence token, which tokenizer '{Tokenizer.Source}' lacks.");
        if (Padding != PaddingMode.None && Tokenizer.PadId == null)
            throw new ArgumentException($"Padding needs a pad token, which tokenizer '{Tokenizer.Source}' lacks.");
    }
}

/// <summary>Tokenizes a text column into ids, with optional BOS/EOS, truncation and padding.</summary>
public sealed class TokenizeEstimator : IEstimator<TokenizeTransformer>
{
    readonly TokenizeOptions _options;

    /// <summary>Creates the estimator; invalid option combinations fail here.</summary>
    public TokenizeEstimator(TokenizeOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
    }

    /// <inheritdoc />
    public TokenizeTransformer Fit(IDataView input)
    {
        var transformer = new TokenizeTransformer(_options);
        transformer.GetOutputSchema(input.Schema);
        return transformer;
    }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaShapes.RequireText(inputSchema, _options.InputColumnName, "Tokenize");
        var added = new List<SchemaShape.Column> { SchemaShapes.Column(_options.OutputColumnName, SchemaShape.Column.VectorKind.VariableVector, NumberDataViewType.Int32) };
        if (_options.AttentionMaskColumnName != null)
            added.Add(SchemaShapes.Column(_options.AttentionMaskColumnName, SchemaShape.Column.VectorKind.VariableVector, NumberDataViewType.Int32));
        return SchemaShapes.Append(inputSchema, [.. added]);
    }
}

/// <summary>Adds token ids (and an attention mask) for a text column.</summary>
public sealed class TokenizeTransformer : AppendColumnsTransformer
{
    /// <summary>Creates the transformer.</summary>
    public TokenizeTransformer(TokenizeOptions options)
    {
        options.Validate();
        Options = options;
        OutputColumns = options.AttentionMaskColumnName == null
            ? [(options.OutputColumnName, TokenSequences.IdsType)]
            : [(options.OutputColumnName, TokenSequences.IdsType), (options.AttentionMaskColumnName, TokenSequences.IdsType)];
    }

    /// <summary>The options the transformer was made with.</summary>
    public TokenizeOptions Options { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ValidateInput(DataViewSchema inputSchema)
    {
        SchemaShapes.RequireText(inputSchema, Options.InputColumnName, "Tokenize");
    }

    /// <inheritdoc />
    protected override IEnumerable<string> InputsOf(int outputIndex) => [Options.InputColumnName];

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive)
    {
        var text = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Options.InputColumnName]);
        ReadOnlyMemory<char> value = default;
        var encoded = new PerRow<List<int>>(input, () =>
        {
            text(ref value);
            return Encode(value.Span);
        });
        int pad = Options.Tokenizer.PadId ?? 0;
        // Both getters write straight into the caller's buffers: padding first, then the tokens (or ones) in place.
        ValueGetter<VBuffer<int>> ids = (ref VBuffer<int> v) =>
        {
            var tokens = encoded.Value;
            int length = TokenSequences.PaddedLength(tokens.Count, Options.Padding, Options.PadTo);
            var editor = VBufferEditor.Create(ref v, length);
            TokenSequences.Pad(tokens, length, pad, Options.PaddingSide, editor.Values);
            v = editor.Commit();
        };
        ValueGetter<VBuffer<int>> mask = (ref VBuffer<int> v) =>
        {
            int count = encoded.Value.Count;
            int length = TokenSequences.PaddedLength(count, Options.Padding, Options.PadTo);
            var editor = VBufferEditor.Create(ref v, length);
            editor.Values.Clear();
            editor.Values.Slice(Options.PaddingSide == PaddingSide.Left ? length - count : 0, count).Fill(1);
            v = editor.Commit();
        };
        return OutputColumns.Count == 1 ? [ids] : [ids, mask];
    }

    /// <summary>The ids of one text before padding: BOS, the (truncated) text, EOS, as the transform computes them.</summary>
    public List<int> Encode(ReadOnlySpan<char> text)
    {
        var o = Options;
        var textIds = o.Tokenizer.Inner.EncodeToIds(text);
        var ids = new List<int>(textIds.Count + 2);
        if (o.AddBos) ids.Add(o.Tokenizer.BosId!.Value);
        ids.AddRange(textIds);
        int maxLength = o.Padding == PaddingMode.Fixed ? (o.MaxLength > 0 ? Math.Min(o.MaxLength, o.PadTo) : o.PadTo) : o.MaxLength;
        int specials = (o.AddBos ? 1 : 0) + (o.AddEos ? 1 : 0);
        if (maxLength > 0 && textIds.Count + specials > maxLength)
        {
            // Special tokens survive truncation: only text tokens are cut.
            int keep = maxLength - specials, start = o.AddBos ? 1 : 0;
            ids.RemoveRange(o.Truncation == TruncationSide.Right ? start + keep : start, textIds.Count - keep);
        }
        if (o.AddEos) ids.Add(o.Tokenizer.EosId!.Value);
        return ids;
    }
}
