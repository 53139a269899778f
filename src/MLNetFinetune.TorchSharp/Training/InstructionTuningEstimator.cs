using MLNetFinetune.Data;
using MLNetFinetune.Generation;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using MLNetFinetune.DataViews;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>Options for instruction finetuning a base model on prompt/response pairs.</summary>
public sealed class InstructionTuningOptions : CausalLMTrainingOptions
{
    /// <summary>The base model directory: ours, or a downloaded Pythia folder (config.json, model.safetensors, tokenizer). Required.</summary>
    public required string BaseModel { get; init; }

    /// <summary>The prompt column (e.g. the prompt form of a template). Default <c>Prompt</c>.</summary>
    public string PromptColumnName { get; init; } = "Prompt";

    /// <summary>The response column. Default <c>Response</c>.</summary>
    public string ResponseColumnName { get; init; } = "Response";

    /// <summary>Loss on response tokens only (default, as TRL); false trains on the whole text, as the course's lab.</summary>
    public bool MaskPrompt { get; init; } = true;

    /// <summary>
    /// Concatenate whole short examples, in data order, into sequences of up to BlockSize tokens: fewer, fuller sequences
    /// (a batch still pads to its longest). Each example attends only to its own tokens and its positions start at 0
    /// (padding-free packing, as TRL's), so it learns what it would alone. Default false: one example per sequence, padded per batch.
    /// </summary>
    public bool PackExamples { get; init; }

    /// <summary>At the end, load the checkpoint with the lowest eval loss (when evaluation is on). Default true.</summary>
    public bool RestoreBest { get; init; } = true;

    /// <summary>Train LoRA adapters on a frozen base instead of every weight; null (default) is full finetuning.</summary>
    public LoraOptions? Lora { get; init; }

    /// <summary>
    /// The prompt format the prompt and response columns were rendered with (<c>ml.Transforms.Text.ApplyPromptFormat</c>):
    /// recorded in the model folder (<c>prompt_format.json</c>, and <c>chat_template</c> in <c>tokenizer_config.json</c>) so
    /// evaluation, chat, the ONNX folder and serving prompt the model as it was trained. Null records none.
    /// </summary>
    public PromptFormat? Format { get; init; }

    /// <summary>
    /// The chat template the prompt and response columns were rendered with (<see cref="MLNetFinetune.ChatTemplates.ConversationPairs"/>):
    /// recorded in the model folder's tokenizer_config.json, so chat, evaluation and the ONNX folder prompt the model
    /// as it was trained. Its responses carry their own end-of-turn tokens, so no end of text is appended. Null for pairs.
    /// </summary>
    public MLNetFinetune.ChatTemplates.ChatTemplate? ChatTemplate { get; init; }

    /// <summary>The template's special tokens (bos_token, eos_token, …), written beside it.</summary>
    public IReadOnlyDictionary<string, object?>? ChatTemplateTokens { get; init; }

    /// <summary>How the returned transformer generates. Default greedy, 100 new tokens.</summary>
    public GenerationOptions Generation { get; init; } = new();
}

/// <summary>
/// Instruction finetuning: tokenizes prompt/response pairs with the base model's tokenizer (prompt masked out of the
/// loss, end of text after the response, prompts cut from the left to fit the block) and trains the base model on the
/// shared loop. Returns a transformer that generates an answer column and scores each row's response perplexity.
/// </summary>
public sealed class InstructionTuningEstimator : IEstimator<CausalLMTransformer>
{
    readonly InstructionTuningOptions _options;
    readonly IChannelProvider? _log;

    /// <summary>Creates the estimator; invalid options fail here.</summary>
    public InstructionTuningEstimator(InstructionTuningOptions options, IChannelProvider? log = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        ArgumentException.ThrowIfNullOrWhiteSpace(options.BaseModel);
        _options = options;
        _log = log;
    }

    /// <inheritdoc />
    public CausalLMTransformer Fit(IDataView input)
    {
        var o = _options;
        SchemaShapes.RequireText(input.Schema, o.PromptColumnName, "Instruction tuning");
        SchemaShapes.RequireText(input.Schema, o.ResponseColumnName, "Instruction tuning");
        var (model, tokenizer) = HfCheckpoint.Load(o.BaseModel);
        if (o.BlockSize > model.Config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(input), $"BlockSize {o.BlockSize} exceeds the base model's max_position_embeddings {model.Config.MaxPositionEmbeddings}.");
        var examples = new TokenizePairsTransformer(new TokenizePairsOptions
        {
            Tokenizer = tokenizer, PromptColumnName = o.PromptColumnName, ResponseColumnName = o.ResponseColumnName,
            InputIdsColumnName = "InputIds__", LabelsColumnName = "Labels__", MaskPrompt = o.MaskPrompt, MaxLength = o.BlockSize,
            AppendEos = o.ChatTemplate == null,
        }).Transform(input);
        var data = new TrainingExamples(examples, "InputIds__", "Labels__", o.EvalFraction, o.MaxEvalBlocks, model.Config.VocabSize,
            packInto: o.PackExamples ? o.BlockSize : 0, inMemoryRows: o.InMemoryShuffleRows);

        global::TorchSharp.torch.manual_seed(o.Seed);
        if (o.Lora != null) model.AttachLora(o.Lora);
        var result = CausalLMTrainer.Train(model, tokenizer, data, o, _log);
        if (o.RestoreBest && result.BestCheckpoint != null) TrainingCheckpoint.LoadWeights(result.BestCheckpoint, model);
        if (model.Lora is { } lora)
        {
            // PEFT-style adapters beside a merged plain model, which exports and serves like any other.
            if (o.WritesFiles) lora.Save(Path.Combine(o.OutputDirectory, "adapter"), Path.GetFullPath(o.BaseModel));
            model.MergeLora();
        }
        var tuned = new CausalLMTransformer(model, tokenizer, result, Scoring(o), o.Format);
        if (o.WritesFiles)
        {
            tuned.Save(Path.Combine(o.OutputDirectory, "model"));
            o.ChatTemplate?.Save(Path.Combine(o.OutputDirectory, "model"), o.ChatTemplateTokens);
        }
        return tuned;
    }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        SchemaShapes.RequireText(inputSchema, _options.PromptColumnName, "Instruction tuning");
        SchemaShapes.RequireText(inputSchema, _options.ResponseColumnName, "Instruction tuning");
        return CausalLMTransformer.OutputShape(inputSchema, Scoring(_options));
    }

    static CausalLMScoringOptions Scoring(InstructionTuningOptions o) => new()
    {
        TextColumnName = null, PromptColumnName = o.PromptColumnName, ResponseColumnName = o.ResponseColumnName, Generation = o.Generation,
    };
}
