using Microsoft.ML;

namespace MLNetFinetune.Tokenization;

/// <summary>Catalog entry points of the tokenization stage.</summary>
public static class MLContextTokenizationExtensions
{
    /// <summary>Text column → token ids (and attention mask), with BOS/EOS, truncation and padding options.</summary>
    public static TokenizeEstimator TokenizeForCausalLM(this TransformsCatalog.TextTransforms catalog, TokenizeOptions options) => new(options);

    /// <summary>Text column → token ids with the defaults (column <c>Text</c> → <c>InputIds</c>, <c>AttentionMask</c>).</summary>
    public static TokenizeEstimator TokenizeForCausalLM(this TransformsCatalog.TextTransforms catalog, TextTokenizer tokenizer,
        string outputColumnName = "InputIds", string inputColumnName = "Text") =>
        new(new TokenizeOptions { Tokenizer = tokenizer, OutputColumnName = outputColumnName, InputColumnName = inputColumnName });

    /// <summary>Prompt/response columns → ids and labels with the prompt masked (ignore index) and EOS after the response.</summary>
    public static TokenizePairsEstimator TokenizePromptResponse(this TransformsCatalog.TextTransforms catalog, TokenizePairsOptions options) => new(options);

    /// <summary>Concatenates token sequences and cuts them into fixed-length blocks for pretraining.</summary>
    public static PackedTokensDataView PackTokens(this DataOperationsCatalog catalog, IDataView data, PackingOptions options) => new(data, options);

    /// <summary>Trains a byte-level BPE tokenizer on a text column.</summary>
    public static TextTokenizer TrainBpeTokenizer(this DataOperationsCatalog catalog, IDataView data, BpeTrainerOptions options) => BpeTrainer.Train(data, options);
}
