using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;
using MLNetFinetune.DataViews;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TokenShards;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>Options for pretraining a GPT-NeoX model from random weights by next-token prediction.</summary>
public sealed class PretrainingOptions : CausalLMTrainingOptions
{
    /// <summary>The model's tokenizer. Required.</summary>
    public required TextTokenizer Tokenizer { get; init; }

    /// <summary>The model shape; when null, <see cref="Preset"/> names one (sized to the tokenizer).</summary>
    public ModelConfig? Config { get; init; }

    /// <summary>A preset shape (<c>tiny</c>, <c>pythia-14m</c>, <c>pythia-70m</c>, <c>pythia-160m</c>) used when <see cref="Config"/> is null. Default <c>pythia-14m</c>.</summary>
    public string Preset { get; init; } = "pythia-14m";

    /// <summary>The text column (tokenized and packed into blocks, end of text between documents). Default <c>Text</c>.</summary>
    public string TextColumnName { get; init; } = "Text";

    /// <summary>Use this token-ids column (variable-length Int32 vectors) instead of the text column; ids are packed as given.</summary>
    public string? TokenIdsColumnName { get; init; }

    /// <summary>The model config this run trains: <see cref="Config"/>, or the preset with the tokenizer's vocabulary (rounded up to 64).</summary>
    public ModelConfig ResolveConfig()
    {
        var config = Config ?? ModelConfig.Preset(Preset, RoundUp(Tokenizer.VocabSize), Tokenizer.EosId ?? 0);
        Tokenizer.CheckFits(config.VocabSize, "the model config");
        if (BlockSize > config.MaxPositionEmbeddings)
            throw new ArgumentOutOfRangeException(nameof(BlockSize), $"BlockSize {BlockSize} exceeds the model's max_position_embeddings {config.MaxPositionEmbeddings}.");
        return config;
    }

    // Embedding tables sized to a multiple of 64 run faster (Pythia pads 50,277 tokens to 50,304).
    static int RoundUp(int vocab) => (vocab + 63) / 64 * 64;

    internal override void Validate()
    {
        base.Validate();
        ArgumentNullException.ThrowIfNull(Tokenizer);
        if (Tokenizer.EosId == null) throw new ArgumentException($"Pretraining separates documents with end of text, which tokenizer '{Tokenizer.Source}' lacks.");
        ResolveConfig();
    }
}

/// <summary>
/// Pretrains a causal language model on an <see cref="IDataView"/> of text, of token ids, or of token shards
/// (<c>ml.Data.LoadTokenShards</c>, read in place) and returns it as a transformer.
/// </summary>
public sealed class PretrainingEstimator : IEstimator<CausalLMTransformer>
{
    readonly PretrainingOptions _options;
    readonly IChannelProvider? _log;

    /// <summary>Creates the estimator; invalid options fail here.</summary>
    public PretrainingEstimator(PretrainingOptions options, IChannelProvider? log = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        _options = options;
        _log = log;
    }

    /// <inheritdoc />
    public CausalLMTransformer Fit(IDataView input)
    {
        var o = _options;
        var config = o.ResolveConfig();
        var data = input is TokenShardDataView shards ? FromShards(shards, config) : Pack(input, config);
        manual_seed(o.Seed);
        var model = new TransformerForCausalLM(config);
        var result = CausalLMTrainer.Train(model, o.Tokenizer, data, o, _log);
        if (o.WritesFiles) HfCheckpoint.Save(model, o.Tokenizer, Path.Combine(o.OutputDirectory, "model"));
        return new CausalLMTransformer(model, o.Tokenizer, result);
    }

    // Text (or variable-length ids) tokenized and packed into blocks, end of text between documents.
    TrainingExamples Pack(IDataView input, ModelConfig config)
    {
        var o = _options;
        CheckInput(input.Schema);
        IDataView ids = o.TokenIdsColumnName != null
            ? input
            : new TokenizeTransformer(new TokenizeOptions { Tokenizer = o.Tokenizer, InputColumnName = o.TextColumnName, OutputColumnName = "InputIds__", AttentionMaskColumnName = null }).Transform(input);
        var blocks = new PackedTokensDataView(ids, new PackingOptions
        {
            BlockSize = o.BlockSize,
            InputColumnName = o.TokenIdsColumnName ?? "InputIds__",
            SeparatorId = o.TokenIdsColumnName == null ? o.Tokenizer.EosId : null,
        });
        return new TrainingExamples(blocks, "InputIds", labelsColumn: null, o.EvalFraction, o.MaxEvalBlocks, config.VocabSize,
            inMemoryRows: o.InMemoryShuffleRows);
    }

    // Token shards already hold packed ids: their blocks are read in place, memory-mapped, each rank reading only its own.
    TrainingExamples FromShards(TokenShardDataView shards, ModelConfig config)
    {
        var o = _options;
        if (shards.Dataset.BlockSize != o.BlockSize)
            throw new ArgumentException($"The token shards were opened in blocks of {shards.Dataset.BlockSize} tokens but BlockSize is {o.BlockSize}: open them with ml.Data.LoadTokenShards(path, {o.BlockSize}).");
        var written = shards.Dataset.Manifest?.Tokenizer;
        if (written != null && (written.VocabSize > config.VocabSize || written.EndOfDocumentId != o.Tokenizer.EosId))
            throw new ArgumentException($"The token shards were written by tokenizer '{written.Source}' ({written.VocabSize} tokens, end of document {written.EndOfDocumentId}); " +
                $"this run's tokenizer '{o.Tokenizer.Source}' has {o.Tokenizer.VocabSize} tokens, end of text {o.Tokenizer.EosId}. Tokenize the corpus again with this tokenizer.");
        return new TrainingExamples(shards, TokenShardDataView.ColumnName, labelsColumn: null, o.EvalFraction, o.MaxEvalBlocks, config.VocabSize);
    }

    /// <inheritdoc />
    public SchemaShape GetOutputSchema(SchemaShape inputSchema)
    {
        if (inputSchema.Any(c => c.Name == TokenShardDataView.ColumnName) && _options.TokenIdsColumnName == null && !inputSchema.Any(c => c.Name == _options.TextColumnName))
            return CausalLMTransformer.OutputShape(inputSchema, new CausalLMScoringOptions { TextColumnName = null });
        if (_options.TokenIdsColumnName == null) SchemaShapes.RequireText(inputSchema, _options.TextColumnName, "Pretraining");
        else if (!inputSchema.Any(c => c.Name == _options.TokenIdsColumnName))
            throw new ArgumentOutOfRangeException(nameof(inputSchema), $"Pretraining reads column '{_options.TokenIdsColumnName}', which the input does not have. Input columns: {SchemaShapes.Names(inputSchema)}.");
        return CausalLMTransformer.OutputShape(inputSchema, new CausalLMScoringOptions { TextColumnName = _options.TokenIdsColumnName == null ? _options.TextColumnName : null });
    }

    void CheckInput(DataViewSchema schema)
    {
        if (_options.TokenIdsColumnName == null) { SchemaShapes.RequireText(schema, _options.TextColumnName, "Pretraining"); return; }
        var column = schema.GetColumnOrNull(_options.TokenIdsColumnName) ?? throw new ArgumentOutOfRangeException(nameof(schema),
            $"Pretraining reads column '{_options.TokenIdsColumnName}', which the input does not have. Input columns: {SchemaShapes.Names(schema)}.");
        if (column.Type is not VectorDataViewType { ItemType: NumberDataViewType n } || n.RawType != typeof(int))
            throw new ArgumentOutOfRangeException(nameof(schema), $"Pretraining reads column '{_options.TokenIdsColumnName}', which is {column.Type}; it must hold Int32 token ids.");
    }
}
