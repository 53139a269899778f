using System.Text.Json;
using System.Text.Json.Serialization;
using MLNetFinetune.Data;

namespace MLNetFinetune.ModelFiles;

/// <summary>
/// The shape of a GPT-NeoX (Pythia) model, with Hugging Face's <c>config.json</c> field names, so a downloaded
/// Pythia folder and ours read the same way. One config covers the whole family; <see cref="Preset"/> names the
/// shapes of the Pythia models and a tiny one for tests.
/// </summary>
public sealed record GptNeoXConfig
{
    /// <summary>Always <c>gpt_neox</c>.</summary>
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "gpt_neox";

    /// <summary>The HF class that loads this config.</summary>
    [JsonPropertyName("architectures")] public string[] Architectures { get; init; } = ["GPTNeoXForCausalLM"];

    /// <summary>Rows of the embedding and output tables (may exceed the tokenizer's size, padded for speed).</summary>
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }

    /// <summary>Width of the residual stream (d_model).</summary>
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; }

    /// <summary>Number of transformer layers.</summary>
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; }

    /// <summary>Number of attention heads.</summary>
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; }

    /// <summary>Width of the MLP's hidden layer (4 × hidden in Pythia).</summary>
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; }

    /// <summary>Fraction of each head's dimensions that get rotary position embedding.</summary>
    [JsonPropertyName("rotary_pct")] public double RotaryPct { get; init; } = 0.25;

    /// <summary>Base of the rotary frequencies.</summary>
    [JsonPropertyName("rotary_emb_base")] public double RotaryEmbBase { get; init; } = 10000;

    /// <summary>Longest context the model was made for.</summary>
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>LayerNorm epsilon.</summary>
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; init; } = 1e-5;

    /// <summary>Attention and MLP read the same input and add to the residual together (Pythia: true).</summary>
    [JsonPropertyName("use_parallel_residual")] public bool UseParallelResidual { get; init; } = true;

    /// <summary>The MLP activation; GPT-NeoX uses exact (erf) GELU.</summary>
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "gelu";

    /// <summary>Beginning-of-sequence id.</summary>
    [JsonPropertyName("bos_token_id")] public int BosTokenId { get; init; }

    /// <summary>End-of-sequence id.</summary>
    [JsonPropertyName("eos_token_id")] public int EosTokenId { get; init; }

    /// <summary>Pythia unties the output head from the input embedding; tied heads are not supported.</summary>
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; }

    /// <summary>Standard deviation of the initial weights.</summary>
    [JsonPropertyName("initializer_range")] public double InitializerRange { get; init; } = 0.02;

    /// <summary>Whether the attention projections have biases (GPT-NeoX: true).</summary>
    [JsonPropertyName("attention_bias")] public bool AttentionBias { get; init; } = true;

    /// <summary>The dtype the weights are stored in.</summary>
    [JsonPropertyName("torch_dtype")] public string TorchDtype { get; init; } = "float32";

    /// <summary>Dimensions per head.</summary>
    [JsonIgnore] public int HeadDim => HiddenSize / NumAttentionHeads;

    /// <summary>Dimensions per head that are rotated (<c>int(head_dim × rotary_pct)</c>, as HF computes it).</summary>
    [JsonIgnore] public int RotaryDim => (int)(HeadDim * RotaryPct);

    /// <summary>The preset names: <c>tiny</c>, <c>pythia-14m</c>, <c>pythia-70m</c>, <c>pythia-160m</c>.</summary>
    public static IReadOnlyList<string> PresetNames { get; } = ["tiny", "pythia-14m", "pythia-70m", "pythia-160m"];

    /// <summary>
    /// A named shape. The Pythia presets use Pythia's vocabulary (50,304 rows, end of text = 0) unless
    /// <paramref name="vocabSize"/> is given; <c>tiny</c> (2 layers, 64 wide) needs it.
    /// </summary>
    public static GptNeoXConfig Preset(string name, int? vocabSize = null, int eosTokenId = 0)
    {
        var (hidden, layers, heads) = name switch
        {
            "tiny" => (64, 2, 4),
            "pythia-14m" => (128, 6, 4),
            "pythia-70m" => (512, 6, 8),
            "pythia-160m" => (768, 12, 12),
            _ => throw new ArgumentException($"Unknown preset '{name}'. Presets: {string.Join(", ", PresetNames)}.", nameof(name)),
        };
        int vocab = vocabSize ?? (name == "tiny" ? throw new ArgumentException("The tiny preset needs a vocabulary size.", nameof(vocabSize)) : 50304);
        return new GptNeoXConfig
        {
            VocabSize = vocab,
            HiddenSize = hidden,
            NumHiddenLayers = layers,
            NumAttentionHeads = heads,
            IntermediateSize = 4 * hidden,
            MaxPositionEmbeddings = name == "tiny" ? 256 : 2048,
            BosTokenId = eosTokenId,
            EosTokenId = eosTokenId,
        }.Validated("preset " + name);
    }

    /// <summary>Checks the fields fit together; <paramref name="source"/> names the file in errors.</summary>
    public GptNeoXConfig Validated(string source)
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new InvalidDataException($"{source}: {problem}");
        }
        Require(ModelType == "gpt_neox", $"model_type is \"{ModelType}\"; only gpt_neox (the Pythia family) is supported");
        Require(VocabSize > 0 && HiddenSize > 0 && NumHiddenLayers > 0 && NumAttentionHeads > 0 && IntermediateSize > 0,
            "vocab_size, hidden_size, num_hidden_layers, num_attention_heads and intermediate_size must all be positive");
        Require(HiddenSize % NumAttentionHeads == 0, $"hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}");
        Require(RotaryPct is >= 0 and <= 1, $"rotary_pct {RotaryPct} is outside [0, 1]");
        Require(RotaryDim % 2 == 0, $"rotary dimensions per head ({RotaryDim} = head_dim {HeadDim} × rotary_pct {RotaryPct}) must be even");
        Require(HiddenAct is "gelu" or "gelu_new" or "gelu_fast" or "gelu_pytorch_tanh", $"hidden_act \"{HiddenAct}\" is not supported (gelu variants only)");
        Require(!TieWordEmbeddings, "tie_word_embeddings is true; GPT-NeoX models here have an untied output head");
        Require(MaxPositionEmbeddings > 0, "max_position_embeddings must be positive");
        Require(LayerNormEps > 0, "layer_norm_eps must be positive");
        return this;
    }

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never };

    /// <summary>Reads a <c>config.json</c>; fields HF writes that do not change the model (dropouts, use_cache, …) are ignored.</summary>
    public static GptNeoXConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config '{path}' does not exist.", path);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path));
            var config = document.Deserialize<GptNeoXConfig>(Json) ?? throw new DataFileException(path, 0, "the file holds JSON null");
            if (document.RootElement.TryGetProperty("rope_scaling", out var scaling) && scaling.ValueKind != JsonValueKind.Null)
                throw new DataFileException(path, 0, "rope_scaling is set; scaled rotary embeddings are not supported");
            return config.Validated(path);
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "config", e, withJsonPath: true);
        }
    }

    /// <summary>Writes <c>config.json</c> atomically.</summary>
    public void Save(string path) => DataFiles.WriteAtomically(path, s => JsonSerializer.Serialize(s, this, Json));

    /// <summary>Parameters of a model of this shape (embeddings and output head included).</summary>
    public long ParameterCount()
    {
        long h = HiddenSize, i = IntermediateSize, v = VocabSize;
        long attentionBias = AttentionBias ? 3 * h + h : 0;
        long layer = 2 * 2 * h /* two LayerNorms */ + 3 * h * h + h * h + attentionBias + (h * i + i) + (i * h + h);
        return v * h * 2 + NumHiddenLayers * layer + 2 * h;
    }
}
