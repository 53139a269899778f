using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Data;

/// <summary>Options of the prompt-template transform.</summary>
public sealed class PromptTemplateOptions
{
    /// <summary>The text column to create (or replace).</summary>
    public required string OutputColumnName { get; init; }

    /// <summary>The template; each <c>{placeholder}</c> names an input text column.</summary>
    public required PromptTemplate Template { get; init; }
}

/// <summary>Renders a <see cref="PromptTemplate"/> over every row into a new text column. Trivial to fit: it learns nothing.</summary>
public sealed class PromptTemplateEstimator : IEstimator<PromptTemplateTransformer>
{
    readonly PromptTemplateOptions _options;

    /// <summary>Creates the estimator.</summary>
    public PromptTemplateEstimator(PromptTemplateOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.OutputColumnName);
        ArgumentNullException.ThrowIfNull(options.Template);
        _options = options;
    }

    /// <inheritdoc />
    public PromptTemplateTransformer Fit(IDataView input)
    {
        var transformer = new PromptTemplateTransformer(_options);
        transformer.GetOutputSchema(input.Schema); // fail now, not at the first cursor
        return transformer;
    }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        foreach (string name in _options.Template.Columns) SchemaShapes.RequireText(inputSchema, name, "The prompt template");
        return SchemaShapes.Append(inputSchema,
            SchemaShapes.Column(_options.OutputColumnName, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance));
    }
}

/// <summary>Adds a text column rendered from a <see cref="PromptTemplate"/> to each row.</summary>
public sealed class PromptTemplateTransformer : AppendColumnsTransformer
{
    readonly string[] _columns;

    /// <summary>Creates the transformer.</summary>
    public PromptTemplateTransformer(PromptTemplateOptions options)
    {
        Options = options;
        _columns = options.Template.Columns.ToArray();
        OutputColumns = [(options.OutputColumnName, TextDataViewType.Instance)];
    }

    /// <summary>The options the transformer was made with.</summary>
    public PromptTemplateOptions Options { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ValidateInput(DataViewSchema inputSchema)
    {
        foreach (string name in _columns) SchemaShapes.RequireText(inputSchema, name, "The prompt template");
    }

    /// <inheritdoc />
    protected override IEnumerable<string> InputsOf(int outputIndex) => _columns;

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive)
    {
        var getters = _columns.ToDictionary(c => c, c => input.GetGetter<ReadOnlyMemory<char>>(input.Schema[c]), StringComparer.Ordinal);
        var values = new Dictionary<string, ReadOnlyMemory<char>>(StringComparer.Ordinal);
        var rendered = new PerRow<string>(input, () =>
        {
            foreach (var (name, get) in getters)
            {
                ReadOnlyMemory<char> v = default;
                get(ref v);
                values[name] = v;
            }
            return Options.Template.Format(name => values[name]);
        });
        ValueGetter<ReadOnlyMemory<char>> getter = (ref ReadOnlyMemory<char> value) => value = rendered.Value.AsMemory();
        return [getter];
    }
}
