using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;
using MLNetFinetune.Generation;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.Data;

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

    /// <summary>Rows generated or scored together (left-padded batches with a KV cache). Default 16.</summary>
    public int BatchSize { get; init; } = 16;

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
/// prompts, in batches of <see cref="CausalLMScoringOptions.BatchSize"/> rows, through <see cref="TorchCausalLM"/> (the
/// shared decode loop with a KV cache). Only the ML.NET adapter: the work is the runtime's. Holds the model; dispose it.
/// </summary>
public sealed class CausalLMTransformer : AppendColumnsTransformer, IDisposable, MLNetFinetune.Evaluation.ILogLikelihoodScorer
{
    /// <summary>Wraps a model and its tokenizer; <paramref name="format"/> is the prompt format it was finetuned with, if any.</summary>
    public CausalLMTransformer(TransformerForCausalLM model, TextTokenizer tokenizer, TrainingResult? training = null, CausalLMScoringOptions? scoring = null, PromptFormat? format = null)
    {
        Runtime = new TorchCausalLM(model, tokenizer);
        Training = training;
        Format = format;
        Scoring = scoring ?? new CausalLMScoringOptions();
        if (Scoring.BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(scoring), "BatchSize must be positive.");
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

    /// <summary>The model and its tokenizer for inference.</summary>
    public TorchCausalLM Runtime { get; }

    /// <summary>The model.</summary>
    public TransformerForCausalLM Model => Runtime.Model;

    /// <summary>Its tokenizer.</summary>
    public TextTokenizer Tokenizer => Runtime.Tokenizer;

    /// <summary>The prompt format the model was finetuned with (recorded in its folder), or null for a base model.</summary>
    public PromptFormat? Format { get; }

    /// <summary>The training run that made the model, when this transformer came from <c>Fit</c>.</summary>
    public TrainingResult? Training { get; }

    /// <summary>What <c>Transform</c> adds.</summary>
    public CausalLMScoringOptions Scoring { get; }

    /// <inheritdoc />
    protected override IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <summary>The same model with other scoring options (the model is shared, not copied).</summary>
    public CausalLMTransformer WithScoring(CausalLMScoringOptions scoring) => new(Model, Tokenizer, Training, scoring, Format);

    /// <summary>Writes the model directory (HF layout), with its prompt format when it has one.</summary>
    public void Save(string directory)
    {
        HfCheckpoint.Save(Model, Tokenizer, directory);
        if (Format != null) PromptFormats.Save(Format, directory, Tokenizer.EosToken);
    }

    /// <summary>Loads a model directory (ours or a downloaded Pythia folder), with the prompt format it records.</summary>
    public static CausalLMTransformer Load(string directory, CausalLMScoringOptions? scoring = null, string device = "auto")
    {
        var (model, tokenizer) = HfCheckpoint.Load(directory, TorchRuntime.ResolveDevice(device));
        return new CausalLMTransformer(model, tokenizer, null, scoring, PromptFormats.Load(directory));
    }

    /// <summary>Mean next-token loss of a text (its first max_position_embeddings tokens); NaN for texts under two tokens.</summary>
    public double Score(string text) => Score([text])[0];

    /// <summary>Mean next-token loss of each text, scored in batches.</summary>
    public double[] Score(IReadOnlyList<string> texts)
    {
        var examples = texts.Select(t => Tokenizer.EncodeSequence(t).Take(Model.Config.MaxPositionEmbeddings).ToArray()).Select(ids => (ids, ids)).ToList();
        return Runtime.MeanLosses(examples, Scoring.BatchSize);
    }

    /// <summary>Mean loss of the response tokens (and end of text) given the prompt: what instruction tuning lowers.</summary>
    public double ScoreResponse(string prompt, string response) => ScoreResponses([(prompt, response)])[0];

    /// <summary>Mean response loss of each pair, scored in batches.</summary>
    public double[] ScoreResponses(IReadOnlyList<(string Prompt, string Response)> pairs)
    {
        var encoder = PairEncoder(appendEos: true);
        return Runtime.MeanLosses(pairs.Select(p => encoder.Encode(p.Prompt, p.Response)).ToList(), Scoring.BatchSize);
    }

    /// <summary>
    /// Summed log-probability of <paramref name="continuation"/> given <paramref name="context"/> and its token count,
    /// as multiple-choice benchmarks score each choice.
    /// </summary>
    public (double LogLikelihood, int Tokens) LogLikelihood(string context, string continuation)
    {
        var (ids, labels) = PairEncoder(appendEos: false).Encode(context, continuation);
        int targets = labels.Skip(1).Count(l => l != TokenSequences.IgnoreIndex);
        return (-Runtime.MeanLosses([(ids, labels)])[0] * targets, targets);
    }

    TokenizePairsTransformer PairEncoder(bool appendEos) =>
        new(new TokenizePairsOptions { Tokenizer = Tokenizer, AppendEos = appendEos, MaxLength = Model.Config.MaxPositionEmbeddings });

    /// <summary>Greedy continuation of <paramref name="prompt"/>, stopping at end of text or after <paramref name="maxNewTokens"/> tokens.</summary>
    public string Generate(string prompt, int maxNewTokens = 100) => Generate(prompt, new GenerationOptions { MaxNewTokens = maxNewTokens });

    /// <summary>Continues <paramref name="prompt"/> (greedy, or sampled as the options say), stopping at end of text.</summary>
    public string Generate(string prompt, GenerationOptions options) => Runtime.Generate([prompt], options)[0];

    /// <summary>Continues each prompt, <see cref="CausalLMScoringOptions.BatchSize"/> at a time.</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions options) => Runtime.Generate(prompts, options, Scoring.BatchSize);

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
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive) => MakeGetters(input, isActive, null, []);

    /// <inheritdoc />
    protected override Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive, IDataView? source, ICollection<IDisposable> owned)
    {
        // Getters are made only for the columns asked for: the input cursor holds just the columns those read.
        var getters = new Delegate[OutputColumns.Count];
        int next = 0;
        if (Scoring.Scores)
        {
            if (isActive(0) || isActive(1))
            {
                var loss = LossBlocks(input, source);
                owned.Add(loss);
                getters[0] = (ValueGetter<float>)((ref float v) => v = (float)loss.Value);
                getters[1] = (ValueGetter<float>)((ref float v) => v = (float)Math.Exp(loss.Value));
            }
            next = 2;
        }
        if (Scoring.PromptColumnName != null && isActive(next))
        {
            var generated = new RowBlocks<string, string>(input, source, [Scoring.PromptColumnName], Scoring.BatchSize,
                row => Text(row, Scoring.PromptColumnName), prompts => Runtime.Generate(prompts, Scoring.Generation, Scoring.BatchSize));
            owned.Add(generated);
            getters[next] = (ValueGetter<ReadOnlyMemory<char>>)((ref ReadOnlyMemory<char> v) => v = generated.Value.AsMemory());
        }
        return getters;
    }

    RowBlocks<(string, string), double> LossBlocks(DataViewRow input, IDataView? source)
    {
        if (Scoring.ResponseColumnName != null)
            return new(input, source, [Scoring.PromptColumnName!, Scoring.ResponseColumnName], Scoring.BatchSize, row =>
            {
                var prompt = Text(row, Scoring.PromptColumnName!);
                var response = Text(row, Scoring.ResponseColumnName);
                return () => (prompt(), response());
            }, ScoreResponses);
        return new(input, source, [Scoring.TextColumnName!], Scoring.BatchSize, row =>
        {
            var text = Text(row, Scoring.TextColumnName!);
            return () => (text(), "");
        }, texts => Score(texts.Select(t => t.Item1).ToList()));
    }

    static Func<string> Text(DataViewRow row, string column)
    {
        var getter = row.GetGetter<ReadOnlyMemory<char>>(row.Schema[column]);
        ReadOnlyMemory<char> value = default;
        return () => { getter(ref value); return value.ToString(); };
    }

    /// <summary>Releases the model's tensors.</summary>
    public void Dispose() => Model.Dispose();
}
