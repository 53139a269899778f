using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;
using MLNetFinetune.Generation;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>Options of the ONNX generation transform.</summary>
public sealed class OnnxGenerationOptions
{
    /// <summary>The exported folder (model.onnx, config.json, tokenizer). Required.</summary>
    public required string ModelFolder { get; init; }

    /// <summary>The prompt column. Default <c>Prompt</c>.</summary>
    public string PromptColumnName { get; init; } = "Prompt";

    /// <summary>The generated-text column. Default <c>Generated</c>.</summary>
    public string OutputColumnName { get; init; } = "Generated";

    /// <summary>How to generate. Default greedy, 100 new tokens.</summary>
    public GenerationOptions Generation { get; init; } = new();

    /// <summary>Execution provider: auto, cpu or cuda.</summary>
    public string Provider { get; init; } = "auto";

    /// <summary>Rows generated together (left-padded batches). Default 16.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>ONNX Runtime's intra-op threads on CPU; 0 (default) keeps its default of one per physical core.</summary>
    public int Threads { get; init; }
}

/// <summary>Adds a generated-text column from a prompt column with an exported model (ONNX Runtime, no libtorch).</summary>
public sealed class OnnxGenerationEstimator(OnnxGenerationOptions options) : IEstimator<OnnxGenerationTransformer>
{
    /// <inheritdoc />
    public OnnxGenerationTransformer Fit(IDataView input)
    {
        SchemaShapes.RequireText(input.Schema, options.PromptColumnName, "Generation");
        return new OnnxGenerationTransformer(options);
    }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaShapes.RequireText(inputSchema, options.PromptColumnName, "Generation");
        return SchemaShapes.Append(inputSchema, SchemaShapes.Column(options.OutputColumnName, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance));
    }
}

/// <summary>Generates a continuation of each row's prompt. Holds an ONNX Runtime session; dispose it.</summary>
public sealed class OnnxGenerationTransformer : AppendColumnsTransformer, IDisposable
{
    /// <summary>Loads the model folder.</summary>
    public OnnxGenerationTransformer(OnnxGenerationOptions options)
    {
        if (options.BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(options), "BatchSize must be positive.");
        Options = options;
        Model = OnnxCausalLM.Load(options.ModelFolder, options.Provider, options.Threads);
        OutputColumns = [(options.OutputColumnName, TextDataViewType.Instance)];
    }

    /// <summary>The options it was made with.</summary>
    public OnnxGenerationOptions Options { get; }

    /// <summary>The generator.</summary>
    public OnnxCausalLM Model { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <inheritdoc />
    protected override void ValidateInput(DataViewSchema inputSchema) => SchemaShapes.RequireText(inputSchema, Options.PromptColumnName, "Generation");

    /// <inheritdoc />
    protected override IEnumerable<string> InputsOf(int outputIndex) => [Options.PromptColumnName];

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive) => MakeGetters(input, isActive, null, []);

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive, IDataView? source, ICollection<IDisposable> owned)
    {
        var generated = new RowBlocks<string, string>(input, source, [Options.PromptColumnName], Options.BatchSize, row =>
        {
            var prompt = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[Options.PromptColumnName]);
            ReadOnlyMemory<char> value = default;
            return () => { prompt(ref value); return value.ToString(); };
        }, prompts => Model.Generate(prompts, Options.Generation));
        owned.Add(generated);
        return [(ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = generated.Value.AsMemory())];
    }

    /// <inheritdoc />
    public void Dispose() => Model.Dispose();
}

/// <summary>Catalog entry point: <c>ml.Transforms.Text.GenerateWithOnnx(...)</c>.</summary>
public static class MLContextOnnxExtensions
{
    /// <summary>Adds a generated-text column from a prompt column with an exported model folder.</summary>
    public static OnnxGenerationEstimator GenerateWithOnnx(this TransformsCatalog.TextTransforms catalog, OnnxGenerationOptions options) => new(options);
}
