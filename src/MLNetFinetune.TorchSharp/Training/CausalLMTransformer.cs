using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>What a <see cref="CausalLMTransformer"/> adds to rows.</summary>
public sealed class CausalLMScoringOptions
{
    /// <summary>Text to score: adds mean token loss and perplexity columns. Null scores nothing. Default <c>Text</c>.</summary>
    public string? TextColumnName { get; init; } = "Text";

    /// <summary>Prompts to continue greedily: adds the generated text. Null (default) generates nothing.</summary>
    public string? PromptColumnName { get; init; }

    /// <summary>The mean token loss column. Default <c>Loss</c>.</summary>
    public string LossColumnName { get; init; } = "Loss";

    /// <summary>The perplexity column. Default <c>Perplexity</c>.</summary>
    public string PerplexityColumnName { get; init; } = "Perplexity";

    /// <summary>The generated-text column. Default <c>Generated</c>.</summary>
    public string GeneratedColumnName { get; init; } = "Generated";

    /// <summary>Longest continuation, in tokens. Default 100 (the course's lab).</summary>
    public int MaxNewTokens { get; init; } = 100;
}

/// <summary>
/// A trained causal language model in an ML.NET pipeline: scores text (mean token loss, perplexity) and continues
/// prompts greedily, with TorchSharp and no KV cache (serving uses the ONNX export). Holds the model; dispose it.
/// </summary>
public sealed class CausalLMTransformer : AppendColumnsTransformer, IDisposable
{
    /// <summary>Wraps a model and its tokenizer.</summary>
    public CausalLMTransformer(GptNeoXForCausalLM model, TextTokenizer tokenizer, TrainingResult? training = null, CausalLMScoringOptions? scoring = null)
    {
        Model = model;
        Tokenizer = tokenizer;
        Training = training;
        Scoring = scoring ?? new CausalLMScoringOptions();
        var columns = new List<(string, DataViewType)>();
        if (Scoring.TextColumnName != null)
        {
            columns.Add((Scoring.LossColumnName, NumberDataViewType.Single));
            columns.Add((Scoring.PerplexityColumnName, NumberDataViewType.Single));
        }
        if (Scoring.PromptColumnName != null) columns.Add((Scoring.GeneratedColumnName, TextDataViewType.Instance));
        OutputColumns = columns;
    }

    /// <summary>The model.</summary>
    public GptNeoXForCausalLM Model { get; }

    /// <summary>Its tokenizer.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>The training run that made the model, when this transformer came from <c>Fit</c>.</summary>
    public TrainingResult? Training { get; }

    /// <summary>What <c>Transform</c> adds.</summary>
    public CausalLMScoringOptions Scoring { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <summary>The same model with other scoring options (the model is shared, not copied).</summary>
    public CausalLMTransformer WithScoring(CausalLMScoringOptions scoring) => new(Model, Tokenizer, Training, scoring);

    /// <summary>Writes the model directory (HF layout).</summary>
    public void Save(string directory) => GptNeoXCheckpoint.Save(Model, Tokenizer, directory);

    /// <summary>Loads a model directory (ours or a downloaded Pythia folder).</summary>
    public static CausalLMTransformer Load(string directory, CausalLMScoringOptions? scoring = null, string device = "auto")
    {
        var (model, tokenizer) = GptNeoXCheckpoint.Load(directory, TorchRuntime.ResolveDevice(device));
        return new CausalLMTransformer(model, tokenizer, null, scoring);
    }

    /// <summary>Mean next-token loss of a text (its first max_position_embeddings tokens); NaN for texts under two tokens.</summary>
    public double Score(string text)
    {
        var ids = Tokenizer.Encode(text).Take(Model.Config.MaxPositionEmbeddings).Select(i => (long)i).ToArray();
        if (ids.Length < 2) return double.NaN;
        Model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var input = tensor(ids, [1, ids.Length], dtype: int64, device: Device);
        return Model.Loss(input, input).item<float>();
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/>, stopping at end of text or after <paramref name="maxNewTokens"/> tokens.</summary>
    public string Generate(string prompt, int maxNewTokens = 100)
    {
        var ids = Tokenizer.Encode(prompt).Select(i => (long)i).ToList();
        int start = ids.Count;
        int window = Model.Config.MaxPositionEmbeddings;
        Model.eval();
        using var _ = no_grad();
        for (int i = 0; i < maxNewTokens; i++)
        {
            using var scope = NewDisposeScope();
            var context = ids.Skip(Math.Max(0, ids.Count - window)).ToArray();
            var logits = Model.forward(tensor(context, [1, context.Length], dtype: int64, device: Device));
            long next = logits[0, -1].argmax().item<long>();
            if (next == Tokenizer.EosId) break;
            ids.Add(next);
        }
        return Tokenizer.Decode(ids.Skip(start).Select(i => (int)i));
    }

    Device Device => Model.parameters().First().device;

    /// <summary>The columns a transformer with these options adds to a shape (for estimators' <c>GetOutputSchema</c>).</summary>
    public static SchemaShape OutputShape(SchemaShape input, CausalLMScoringOptions scoring)
    {
        var added = new List<SchemaShape.Column>();
        if (scoring.TextColumnName != null)
        {
            added.Add(SchemaShapes.Column(scoring.LossColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single));
            added.Add(SchemaShapes.Column(scoring.PerplexityColumnName, SchemaShape.Column.VectorKind.Scalar, NumberDataViewType.Single));
        }
        if (scoring.PromptColumnName != null)
            added.Add(SchemaShapes.Column(scoring.GeneratedColumnName, SchemaShape.Column.VectorKind.Scalar, TextDataViewType.Instance));
        return SchemaShapes.Append(input, [.. added]);
    }

    /// <inheritdoc />
    protected override void ValidateInput(DataViewSchema inputSchema)
    {
        if (Scoring.TextColumnName != null) SchemaShapes.RequireText(inputSchema, Scoring.TextColumnName, "Scoring");
        if (Scoring.PromptColumnName != null) SchemaShapes.RequireText(inputSchema, Scoring.PromptColumnName, "Generation");
    }

    /// <inheritdoc />
    protected override IEnumerable<string> InputsOf(int outputIndex) =>
        Scoring.TextColumnName != null && outputIndex < 2 ? [Scoring.TextColumnName] : [Scoring.PromptColumnName!];

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive)
    {
        var getters = new List<Delegate>();
        if (Scoring.TextColumnName != null)
        {
            var text = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Scoring.TextColumnName]);
            ReadOnlyMemory<char> value = default;
            var loss = new PerRow<double>(input, () => { text(ref value); return Score(value.ToString()); });
            getters.Add((ValueGetter<float>)((ref float v) => v = (float)loss.Value));
            getters.Add((ValueGetter<float>)((ref float v) => v = (float)Math.Exp(loss.Value)));
        }
        if (Scoring.PromptColumnName != null)
        {
            var prompt = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Scoring.PromptColumnName]);
            ReadOnlyMemory<char> value = default;
            var generated = new PerRow<string>(input, () => { prompt(ref value); return Generate(value.ToString(), Scoring.MaxNewTokens); });
            getters.Add((ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = generated.Value.AsMemory()));
        }
        return [.. getters];
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => Model.Dispose();
}
