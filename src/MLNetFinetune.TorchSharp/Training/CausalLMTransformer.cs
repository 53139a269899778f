using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;
using MLNetFinetune.Generation;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>What a <see cref="CausalLMTransformer"/> adds to rows.</summary>
public sealed class CausalLMScoringOptions
{
    /// <summary>Text to score: adds mean token loss and perplexity columns. Null scores nothing. Default <c>Text</c>.</summary>
    public string? TextColumnName { get; init; } = "Text";

    /// <summary>Prompts to continue: adds the generated text. Null (default) generates nothing.</summary>
    public string? PromptColumnName { get; init; }

    /// <summary>
    /// With a prompt column: score this response column given the prompt (loss over the response tokens only, as
    /// finetuning measures it) instead of a text column.
    /// </summary>
    public string? ResponseColumnName { get; init; }

    /// <summary>How to generate. Default greedy, 100 new tokens.</summary>
    public GenerationOptions Generation { get; init; } = new();

    /// <summary>The mean token loss column. Default <c>Loss</c>.</summary>
    public string LossColumnName { get; init; } = "Loss";

    /// <summary>The perplexity column. Default <c>Perplexity</c>.</summary>
    public string PerplexityColumnName { get; init; } = "Perplexity";

    /// <summary>The generated-text column. Default <c>Generated</c>.</summary>
    public string GeneratedColumnName { get; init; } = "Generated";

    internal bool Scores => TextColumnName != null || ResponseColumnName != null;
}

/// <summary>
/// A trained causal language model in an ML.NET pipeline: scores text (mean token loss, perplexity) and continues
/// prompts greedily, with TorchSharp and no KV cache (serving uses the ONNX export). Holds the model; dispose it.
/// </summary>
public sealed class CausalLMTransformer : AppendColumnsTransformer, IDisposable, MLNetFinetune.Evaluation.ILogLikelihoodScorer
{
    /// <summary>Wraps a model and its tokenizer.</summary>
    public CausalLMTransformer(GptNeoXForCausalLM model, TextTokenizer tokenizer, TrainingResult? training = null, CausalLMScoringOptions? scoring = null)
    {
        Model = model;
        Tokenizer = tokenizer;
        Training = training;
        Scoring = scoring ?? new CausalLMScoringOptions();
        var columns = new List<(string, DataViewType)>();
        if (Scoring.ResponseColumnName != null && Scoring.PromptColumnName == null)
            throw new ArgumentException("Scoring a response needs the prompt column it answers.");
        if (Scoring.Scores)
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
        var ids = Tokenizer.Encode(text).Take(Model.Config.MaxPositionEmbeddings).ToArray();
        return ids.Length < 2 ? double.NaN : MeanLoss(ids, ids);
    }

    /// <summary>Mean loss of the response tokens (and end of text) given the prompt: what instruction tuning lowers.</summary>
    public double ScoreResponse(string prompt, string response)
    {
        var (ids, labels) = PairEncoder().Encode(prompt, response);
        return MeanLoss(ids, labels);
    }

    /// <summary>
    /// Summed log-probability of <paramref name="continuation"/> given <paramref name="context"/> and its token count,
    /// as multiple-choice benchmarks score each choice.
    /// </summary>
    public (double LogLikelihood, int Tokens) LogLikelihood(string context, string continuation)
    {
        var encoder = new TokenizePairsTransformer(new TokenizePairsOptions { Tokenizer = Tokenizer, AppendEos = false, MaxLength = Model.Config.MaxPositionEmbeddings });
        var (ids, labels) = encoder.Encode(context, continuation);
        int targets = labels.Skip(1).Count(l => l != TokenSequences.IgnoreIndex);
        return (-MeanLoss(ids, labels) * targets, targets);
    }

    TokenizePairsTransformer PairEncoder() => new(new TokenizePairsOptions { Tokenizer = Tokenizer, MaxLength = Model.Config.MaxPositionEmbeddings });

    double MeanLoss(int[] ids, int[] labels)
    {
        Model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        var input = tensor(ids, [1, ids.Length]).to(int64, Device);
        var target = tensor(labels, [1, labels.Length]).to(int64, Device);
        return Model.Loss(input, target).item<float>();
    }

    /// <summary>Greedy continuation of <paramref name="prompt"/>, stopping at end of text or after <paramref name="maxNewTokens"/> tokens.</summary>
    public string Generate(string prompt, int maxNewTokens = 100) => Generate(prompt, new GenerationOptions { MaxNewTokens = maxNewTokens });

    /// <summary>Continues <paramref name="prompt"/> (greedy, or sampled as the options say), stopping at end of text.</summary>
    public string Generate(string prompt, GenerationOptions options)
    {
        options.Validate();
        long eos = Tokenizer.EosId ?? Model.Config.EosTokenId;
        var ids = Tokenizer.Encode(prompt).Select(i => (long)i).ToList();
        int start = ids.Count;
        int window = Model.Config.MaxPositionEmbeddings;
        var random = new Random(options.Seed);
        Model.eval();
        using var _ = no_grad();
        for (int i = 0; i < options.MaxNewTokens; i++)
        {
            using var scope = NewDisposeScope();
            var context = ids.Skip(Math.Max(0, ids.Count - window)).ToArray();
            var logits = Model.forward(tensor(context, [1, context.Length], dtype: int64, device: Device))[0, -1];
            long next = options.Temperature <= 0 && options.RepetitionPenalty == 1.0 && Tokenizer.VocabSize >= Model.Config.VocabSize
                ? logits.argmax().item<long>()
                : Sampling.Next(logits.cpu().data<float>().ToArray(), options, random, ids, Tokenizer.VocabSize);
            if (next == eos) break;
            ids.Add(next);
            if (options.StopSequences.Count > 0 && Sampling.CutAtStop(Tokenizer.Decode(ids.Skip(start).Select(t => (int)t)), options.StopSequences).Stopped) break;
        }
        return Sampling.CutAtStop(Tokenizer.Decode(ids.Skip(start).Select(i => (int)i)), options.StopSequences).Text;
    }

    Device Device => Model.parameters().First().device;

    /// <summary>The columns a transformer with these options adds to a shape (for estimators' <c>GetOutputSchema</c>).</summary>
    public static SchemaShape OutputShape(SchemaShape input, CausalLMScoringOptions scoring)
    {
        var added = new List<SchemaShape.Column>();
        if (scoring.Scores)
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
        if (Scoring.TextColumnName != null && Scoring.ResponseColumnName == null) SchemaShapes.RequireText(inputSchema, Scoring.TextColumnName, "Scoring");
        if (Scoring.ResponseColumnName != null) SchemaShapes.RequireText(inputSchema, Scoring.ResponseColumnName, "Scoring");
        if (Scoring.PromptColumnName != null) SchemaShapes.RequireText(inputSchema, Scoring.PromptColumnName, "Generation");
    }

    /// <inheritdoc />
    protected override IEnumerable<string> InputsOf(int outputIndex) =>
        Scoring.Scores && outputIndex < 2
            ? Scoring.ResponseColumnName != null ? [Scoring.PromptColumnName!, Scoring.ResponseColumnName] : [Scoring.TextColumnName!]
            : [Scoring.PromptColumnName!];

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive)
    {
        // Getters are made only for the columns asked for: the input cursor holds just the columns those read.
        var getters = new Delegate[OutputColumns.Count];
        int next = 0;
        if (Scoring.Scores)
        {
            if (isActive(0) || isActive(1))
            {
                var loss = new PerRow<double>(input, LossReader(input));
                getters[0] = (ValueGetter<float>)((ref float v) => v = (float)loss.Value);
                getters[1] = (ValueGetter<float>)((ref float v) => v = (float)Math.Exp(loss.Value));
            }
            next = 2;
        }
        if (Scoring.PromptColumnName != null && isActive(next))
        {
            var prompt = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Scoring.PromptColumnName]);
            ReadOnlyMemory<char> value = default;
            var generated = new PerRow<string>(input, () => { prompt(ref value); return Generate(value.ToString(), Scoring.Generation); });
            getters[next] = (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = generated.Value.AsMemory());
        }
        return getters;
    }

    Func<double> LossReader(DataViewRow input)
    {
        if (Scoring.ResponseColumnName != null)
        {
            var prompt = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Scoring.PromptColumnName!]);
            var response = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Scoring.ResponseColumnName]);
            ReadOnlyMemory<char> p = default, r = default;
            return () => { prompt(ref p); response(ref r); return ScoreResponse(p.ToString(), r.ToString()); };
        }
        var text = input.GetGetter<ReadOnlyMemory<char>>(input.Schema[Scoring.TextColumnName!]);
        ReadOnlyMemory<char> value = default;
        return () => { text(ref value); return Score(value.ToString()); };
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => Model.Dispose();
}
