using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Tokenization;

/// <summary>Options of the prompt/response tokenize transform, which makes instruction-tuning examples.</summary>
public sealed class TokenizePairsOptions
{
    /// <summary>The tokenizer.</summary>
    public required TextTokenizer Tokenizer { get; init; }

    /// <summary>The prompt text column (e.g. the prompt form of a template). Default <c>Prompt</c>.</summary>
    public string PromptColumnName { get; init; } = "Prompt";

    /// <summary>The response text column. Default <c>Response</c>.</summary>
    public string ResponseColumnName { get; init; } = "Response";

    /// <summary>The ids column: prompt, response, end of text. Default <c>InputIds</c>.</summary>
    public string InputIdsColumnName { get; init; } = "InputIds";

    /// <summary>The labels column, aligned with the ids (the model shifts them). Default <c>Labels</c>.</summary>
    public string LabelsColumnName { get; init; } = "Labels";

    /// <summary>
    /// Labels of prompt tokens are the ignore index (-100), so the loss covers only the response (default, as TRL
    /// does). False trains on the whole text, as the course's lab does.
    /// </summary>
    public bool MaskPrompt { get; init; } = true;

    /// <summary>Append end of text to the response, so the model learns to stop. Default true.</summary>
    public bool AppendEos { get; init; } = true;

    /// <summary>
    /// Longest example in tokens; 0 (default) keeps all. The prompt is cut from the left first (its end leads into
    /// the answer) but keeps at least half the budget when it is that long, so a long response never loses its
    /// question entirely; the response is cut from the right to fit the rest.
    /// </summary>
    public int MaxLength { get; init; }
}

/// <summary>Tokenizes prompt/response pairs into ids and labels with the prompt masked out of the loss.</summary>
public sealed class TokenizePairsEstimator : IEstimator<TokenizePairsTransformer>
{
    readonly TokenizePairsOptions _options;

    /// <summary>Creates the estimator.</summary>
    public TokenizePairsEstimator(TokenizePairsOptions options)
    {
        TokenizePairsTransformer.Validate(options);
        _options = options;
    }

    /// <inheritdoc />
    public TokenizePairsTransformer Fit(IDataView input)
    {
        var transformer = new TokenizePairsTransformer(_options);
        transformer.GetOutputSchema(input.Schema);
        return transformer;
    }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        foreach (string name in new[] { _options.PromptColumnName, _options.ResponseColumnName }) SchemaShapes.RequireText(inputSchema, name, "Pair tokenization");
        return SchemaShapes.Append(inputSchema,
            SchemaShapes.Column(_options.InputIdsColumnName, SchemaShape.Column.VectorKind.VariableVector, NumberDataViewType.Int32),
            SchemaShapes.Column(_options.LabelsColumnName, SchemaShape.Column.VectorKind.VariableVector, NumberDataViewType.Int32));
    }
}

/// <summary>Adds ids and labels for prompt/response pairs.</summary>
public sealed class TokenizePairsTransformer : AppendColumnsTransformer
{
    /// <summary>Creates the transformer.</summary>
    public TokenizePairsTransformer(TokenizePairsOptions options)
    {
        Validate(options);
        Options = options;
        OutputColumns = [(options.InputIdsColumnName, TokenSequences.IdsType), (options.LabelsColumnName, TokenSequences.IdsType)];
    }

    /// <summary>The options the transformer was made with.</summary>
    public TokenizePairsOptions Options { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    internal static void Validate(TokenizePairsOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(options.Tokenizer);
        if (options.MaxLength < 0) throw new ArgumentOutOfRangeException(nameof(options), "MaxLength must be 0 (no limit) or positive.");
        if (options.InputIdsColumnName == options.LabelsColumnName) throw new ArgumentException("The ids and labels columns need different names.");
        if (options.AppendEos && options.Tokenizer.EosId == null)
            throw new ArgumentException($"AppendEos needs an end-of-text token, which tokenizer '{options.Tokenizer.Source}' lacks.");
    }

    /// <inheritdoc />
    protected override void ValidateInput(DataViewSchema inputSchema)
    {
        foreach (string name in new[] { Options.PromptColumnName, Options.ResponseColumnName }) SchemaShapes.RequireText(inputSchema, name, "Pair tokenization");
    }

    /// <inheritdoc />
    protected override IEnumerable<string> InputsOf(int outputIndex) => [Options.PromptColumnName, Options.ResponseColumnName];

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive)
    {
        var prompt = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Options.PromptColumnName]);
        var response = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Options.ResponseColumnName]);
        ReadOnlyMemory<char> p = default, r = default;
        var encoded = new PerRow<(int[] Ids, int[] Labels)>(input, () =>
        {
            prompt(ref p);
            response(ref r);
            if (r.Span.IsWhiteSpace())
                throw new InvalidDataException($"Row {input.Position}: the response ('{Options.ResponseColumnName}') is empty; every example needs an answer to learn.");
            return Encode(p.ToString(), r.ToString());
        });
        ValueGetter<VBuffer<int>> ids = (ref VBuffer<int> v) => TokenSequences.Set(ref v, encoded.Value.Ids);
        ValueGetter<VBuffer<int>> labels = (ref VBuffer<int> v) => TokenSequences.Set(ref v, encoded.Value.Labels);
        return [ids, labels];
    }

    /// <summary>Ids and labels of one pair, as the transform computes them.</summary>
    public (int[] Ids, int[] Labels) Encode(string prompt, string response)
    {
        var o = Options;
        var promptIds = new List<int>(o.Tokenizer.EncodeSequence(prompt));
        var responseIds = new List<int>(o.Tokenizer.Encode(response));
        if (o.AppendEos) responseIds.Add(o.Tokenizer.EosId!.Value);
        if (o.MaxLength > 0 && promptIds.Count + responseIds.Count > o.MaxLength)
        {
            int keepPrompt = Math.Max(o.MaxLength - responseIds.Count, Math.Min(promptIds.Count, o.MaxLength / 2));
            TokenSequences.Truncate(promptIds, keepPrompt, TruncationSide.Left);
            TokenSequences.Truncate(responseIds, o.MaxLength - promptIds.Count, TruncationSide.Right);
        }
        int[] ids = [.. promptIds, .. responseIds];
        int[] labels = [.. o.MaskPrompt ? Enumerable.Repeat(TokenSequences.IgnoreIndex, promptIds.Count) : promptIds, .. responseIds];
        return (ids, labels);
    }
}
