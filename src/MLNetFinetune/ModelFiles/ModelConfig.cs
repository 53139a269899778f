using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using MLNetFinetune.Data;

namespace MLNetFinetune.ModelFiles;

/// <summary>
/// The shape of a decoder-only model of the families this project runs, in one config (as LitGPT does): GPT-NeoX
/// (Pythia) and the Llama family (Llama 2/3, SmolLM2, TinyLlama; Qwen2 with its q/k/v biases). Fields carry Hugging
/// Face's <c>config.json</c> names, so a published folder and ours read and write the same way; the keys of the other
/// family are not written, and keys that do not change the model (<c>use_cache</c>, <c>transformers_version</c>, …)
/// travel through unchanged. <see cref="Preset"/> names the shapes of the published models and tiny ones for tests.
/// </summary>
public sealed record ModelConfig
{
    /// <summary><c>gpt_neox</c>, <c>llama</c> or <c>qwen2</c>.</summary>
    [JsonPropertyName("model_type")] public string ModelType { get; init; } = "gpt_neox";

    /// <summary>The HF class that loads this config.</summary>
    [JsonPropertyName("architectures")] public string[]? Architectures { get; init; }

    /// <summary>Rows of the embedding and output tables (may exceed the tokenizer's size, padded for speed).</summary>
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; }

    /// <summary>Width of the residual stream (d_model).</summary>
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; }

    /// <summary>Number of transformer layers.</summary>
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; }

    /// <summary>Number of query heads.</summary>
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; }

    /// <summary>Key/value heads (Llama family): fewer than the query heads is grouped-query attention, one is multi-query; null means as many as the query heads.</summary>
    [JsonPropertyName("num_key_value_heads")] public int? NumKeyValueHeads { get; init; }

    /// <summary>Dimensions per head when the config gives them (Llama family); null means hidden_size / num_attention_heads.</summary>
    [JsonPropertyName("head_dim")] public int? ConfiguredHeadDim { get; init; }

    /// <summary>Width of the MLP's hidden layer.</summary>
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; }

    /// <summary>GPT-NeoX: fraction of each head's dimensions that get rotary position embedding (the Llama family rotates all).</summary>
    [JsonPropertyName("rotary_pct")] public double RotaryPct { get; init; } = 0.25;

    /// <summary>GPT-NeoX: base of the rotary frequencies.</summary>
    [JsonPropertyName("rotary_emb_base")] public double RotaryEmbBase { get; init; } = 10000;

    /// <summary>Llama family: base of the rotary frequencies.</summary>
    [JsonPropertyName("rope_theta")] public double RopeTheta { get; init; } = 10000;

    /// <summary>Llama family: rescaled rotary frequencies for longer contexts (<c>llama3</c> or <c>linear</c>), or null.</summary>
    [JsonPropertyName("rope_scaling")] public RopeScaling? RopeScaling { get; init; }

    /// <summary>Longest context the model was made for.</summary>
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 2048;

    /// <summary>GPT-NeoX: LayerNorm epsilon.</summary>
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; init; } = 1e-5;

    /// <summary>Llama family: RMSNorm epsilon.</summary>
    [JsonPropertyName("rms_norm_eps")] public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>GPT-NeoX: attention and MLP read the same input and add to the residual together (Pythia: true).</summary>
    [JsonPropertyName("use_parallel_residual")] public bool UseParallelResidual { get; init; } = true;

    /// <summary>The MLP activation as config.json gives it: exact or tanh GELU (GPT-NeoX), SiLU in a gated MLP (Llama family); null for the family's default.</summary>
    [JsonPropertyName("hidden_act")] public string? HiddenActSetting { get; init; }

    /// <summary>The activation in use: <c>hidden_act</c>, else the family's default (GPT-NeoX gelu, Llama silu, as HF's configs default).</summary>
    [JsonIgnore] public string HiddenAct => HiddenActSetting ?? (IsGptNeoX ? "gelu" : "silu");

    /// <summary>Beginning-of-sequence id (null in some published configs).</summary>
    [JsonPropertyName("bos_token_id")] public int? BosTokenId { get; init; }

    /// <summary>End-of-sequence ids: one, or several (Llama 3 ends a turn or the text); written as HF wrote it.</summary>
    [JsonPropertyName("eos_token_id"), JsonConverter(typeof(TokenIdsConverter))] public IReadOnlyList<int> EosTokenIds { get; init; } = [0];

    /// <summary>The output head reuses the input embedding (SmolLM2, Qwen2.5-0.5B, Llama 3.2): the file has no head weight.</summary>
    [JsonPropertyName("tie_word_embeddings")] public bool TieWordEmbeddings { get; init; }

    /// <summary>Standard deviation of the initial weights.</summary>
    [JsonPropertyName("initializer_range")] public double InitializerRange { get; init; } = 0.02;

    /// <summary>Whether the attention projections have biases; null means the family's default (GPT-NeoX: true, Llama: false; Qwen2 always has q/k/v biases).</summary>
    [JsonPropertyName("attention_bias")] public bool? AttentionBias { get; init; }

    /// <summary>Llama: whether the gate/up/down projections have biases.</summary>
    [JsonPropertyName("mlp_bias")] public bool MlpBias { get; init; }

    /// <summary>Qwen2: sliding-window attention, which is not supported (published Qwen2.5 configs leave it off).</summary>
    [JsonPropertyName("use_sliding_window")] public bool UseSlidingWindow { get; init; }

    /// <summary>The dtype the weights are stored in.</summary>
    [JsonPropertyName("torch_dtype")] public string TorchDtype { get; init; } = "float32";

    /// <summary>Keys that do not change the model, kept so a loaded config saves back with them.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? OtherKeys { get; init; }

    /// <summary>GPT-NeoX (fused QKV, LayerNorm, GELU MLP, partial rotary) rather than the Llama family.</summary>
    [JsonIgnore] public bool IsGptNeoX => ModelType == "gpt_neox";

    /// <summary>The first end-of-sequence id.</summary>
    [JsonIgnore] public int EosTokenId => EosTokenIds[0];

    /// <summary>Dimensions per head.</summary>
    [JsonIgnore] public int HeadDim => ConfiguredHeadDim ?? HiddenSize / NumAttentionHeads;

    /// <summary>Key/value heads (the query heads when the config does not say).</summary>
    [JsonIgnore] public int KeyValueHeads => NumKeyValueHeads ?? NumAttentionHeads;

    /// <summary>Dimensions per head that are rotated: <c>int(head_dim × rotary_pct)</c> for GPT-NeoX, as HF computes it; all of them for Llama.</summary>
    [JsonIgnore] public int RotaryDim => IsGptNeoX ? (int)(HeadDim * RotaryPct) : HeadDim;

    /// <summary>The rotary base of the family's key.</summary>
    [JsonIgnore] public double RotaryBase => IsGptNeoX ? RotaryEmbBase : RopeTheta;

    /// <summary>The epsilon of the family's norm (LayerNorm or RMSNorm).</summary>
    [JsonIgnore] public double NormEps => IsGptNeoX ? LayerNormEps : RmsNormEps;

    /// <summary>Whether the query/key/value projections have biases.</summary>
    [JsonIgnore] public bool QkvBias => ModelType == "qwen2" || (AttentionBias ?? IsGptNeoX);

    /// <summary>Whether the attention output projection has a bias (never in Qwen2).</summary>
    [JsonIgnore] public bool OutputBias => ModelType != "qwen2" && (AttentionBias ?? IsGptNeoX);

    static readonly string[] GptNeoXOnlyKeys = ["rotary_pct", "rotary_emb_base", "layer_norm_eps", "use_parallel_residual"];
    static readonly string[] LlamaOnlyKeys = ["num_key_value_heads", "head_dim", "rope_theta", "rope_scaling", "rms_norm_eps", "mlp_bias", "use_sliding_window"];

    /// <summary>The preset names: tiny ones for tests, and the shapes (not the weights) of published models.</summary>
    public static IReadOnlyList<string> PresetNames { get; } =
        ["tiny", "tiny-llama", "pythia-14m", "pythia-70m", "pythia-160m", "smollm2-135m", "smollm2-360m", "qwen2.5-0.5b", "tinyllama-1.1b", "llama-3.2-1b"];

    /// <summary>
    /// A named shape. Published shapes keep their vocabulary size unless <paramref name="vocabSize"/> is given (a
    /// model pretrained here on its own tokenizer); <c>tiny</c> (GPT-NeoX, 2 layers, 64 wide) and <c>tiny-llama</c>
    /// (grouped-query attention, tied embeddings, llama3 rotary scaling) need it.
    /// </summary>
    public static ModelConfig Preset(string name, int? vocabSize = null, int eosTokenId = 0)
    {
        // Shapes from the published config.json of each model.
        ModelConfig shape = name switch
        {
            "tiny" => NeoX(64, 2, 4, 256),
            "pythia-14m" => NeoX(128, 6, 4, 2048),
            "pythia-70m" => NeoX(512, 6, 8, 2048),
            "pythia-160m" => NeoX(768, 12, 12, 2048),
            "tiny-llama" => Llama(64, 2, 4, 2, 128, 256, 10000, 1e-5, tied: true) with
            {
                RopeScaling = new RopeScaling { RopeType = "llama3", Factor = 8, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 64 },
            },
            "smollm2-135m" => Llama(576, 30, 9, 3, 1536, 8192, 100000, 1e-5, tied: true) with { VocabSize = 49152 },
            "smollm2-360m" => Llama(960, 32, 15, 5, 2560, 8192, 100000, 1e-5, tied: true) with { VocabSize = 49152 },
            "qwen2.5-0.5b" => Llama(896, 24, 14, 2, 4864, 32768, 1000000, 1e-6, tied: true) with
            {
                ModelType = "qwen2", Architectures = ["Qwen2ForCausalLM"], VocabSize = 151936,
            },
            "tinyllama-1.1b" => Llama(2048, 22, 32, 4, 5632, 2048, 10000, 1e-5, tied: false) with { VocabSize = 32000 },
            "llama-3.2-1b" => Llama(2048, 16, 32, 8, 8192, 131072, 500000, 1e-5, tied: true) with
            {
                VocabSize = 128256,
                RopeScaling = new RopeScaling { RopeType = "llama3", Factor = 32, LowFreqFactor = 1, HighFreqFactor = 4, OriginalMaxPositionEmbeddings = 8192 },
            },
            _ => throw new ArgumentException($"Unknown preset '{name}'. Presets: {string.Join(", ", PresetNames)}.", nameof(name)),
        };
        int vocab = vocabSize ?? (name is "tiny" or "tiny-llama" ? throw new ArgumentException($"The {name} preset needs a vocabulary size.", nameof(vocabSize))
            : shape.IsGptNeoX ? 50304 : shape.VocabSize);
        return (shape with { VocabSize = vocab, BosTokenId = eosTokenId, EosTokenIds = [eosTokenId] }).Validated("preset " + name);

        static ModelConfig NeoX(int hidden, int layers, int heads, int context) => new()
        {
            Architectures = ["GPTNeoXForCausalLM"], HiddenSize = hidden, NumHiddenLayers = layers, NumAttentionHeads = heads,
            IntermediateSize = 4 * hidden, MaxPositionEmbeddings = context, HiddenActSetting = "gelu",
        };

        static ModelConfig Llama(int hidden, int layers, int heads, int kvHeads, int intermediate, int context, double theta, double eps, bool tied) => new()
        {
            ModelType = "llama", Architectures = ["LlamaForCausalLM"], HiddenSize = hidden, NumHiddenLayers = layers, NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads, IntermediateSize = intermediate, MaxPositionEmbeddings = context, RopeTheta = theta, RmsNormEps = eps,
            TieWordEmbeddings = tied, HiddenActSetting = "silu",
        };
    }

    /// <summary>Checks the fields fit together and are supported; <paramref name="source"/> names the file in errors, each naming the key and its value.</summary>
    public ModelConfig Validated(string source)
    {
        void Require(bool ok, string problem)
        {
            if (!ok) throw new InvalidDataException($"{source}: {problem}");
        }
        Require(ModelType is "gpt_neox" or "llama" or "qwen2",
            $"model_type is \"{ModelType}\"; supported: gpt_neox (Pythia), llama (Llama 2/3, SmolLM2, TinyLlama), qwen2 (Qwen2/2.5)");
        Require(VocabSize > 0 && HiddenSize > 0 && NumHiddenLayers > 0 && NumAttentionHeads > 0 && IntermediateSize > 0,
            "vocab_size, hidden_size, num_hidden_layers, num_attention_heads and intermediate_size must all be positive");
        Require(ConfiguredHeadDim != null || HiddenSize % NumAttentionHeads == 0, $"hidden_size {HiddenSize} is not divisible by num_attention_heads {NumAttentionHeads}");
        Require(HeadDim > 0, $"head_dim {HeadDim} must be positive");
        Require(KeyValueHeads > 0 && NumAttentionHeads % KeyValueHeads == 0,
            $"num_key_value_heads {KeyValueHeads} must divide num_attention_heads {NumAttentionHeads}");
        Require(MaxPositionEmbeddings > 0, "max_position_embeddings must be positive");
        Require(EosTokenIds.Count > 0, "eos_token_id is an empty list");
        if (IsGptNeoX)
        {
            Require(NumKeyValueHeads == null || NumKeyValueHeads == NumAttentionHeads, $"num_key_value_heads {NumKeyValueHeads}: GPT-NeoX has no grouped-query attention");
            Require(RotaryPct is >= 0 and <= 1, $"rotary_pct {RotaryPct} is outside [0, 1]");
            Require(RotaryDim % 2 == 0, $"rotary dimensions per head ({RotaryDim} = head_dim {HeadDim} × rotary_pct {RotaryPct}) must be even");
            Require(HiddenAct is "gelu" or "gelu_new" or "gelu_fast" or "gelu_pytorch_tanh", $"hidden_act \"{HiddenAct}\" is not supported for gpt_neox (gelu variants only)");
            Require(LayerNormEps > 0, "layer_norm_eps must be positive");
        }
        else
        {
            Require(HiddenAct == "silu", $"hidden_act \"{HiddenAct}\" is not supported for {ModelType} (silu only)");
            Require(HeadDim % 2 == 0, $"head_dim {HeadDim} must be even for rotary embedding");
            Require(RmsNormEps > 0, "rms_norm_eps must be positive");
            Require(!UseSlidingWindow, "use_sliding_window is true; sliding-window attention is not supported");
            RopeScaling?.Check(Require);
        }
        return this;
    }

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.Never };

    /// <summary>Reads a <c>config.json</c>; keys that do not change the model (dropouts, use_cache, …) are kept but not used.</summary>
    public static ModelConfig Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config '{path}' does not exist.", path);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(path));
            var config = document.Deserialize<ModelConfig>(Json) ?? throw new DataFileException(path, 0, "the file holds JSON null");
            return config.Validated(path);
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "config", e, withJsonPath: true);
        }
    }

    /// <summary>The config as HF writes it for this family: the other family's keys left out, unset optional keys omitted.</summary>
    public JsonObject ToJson()
    {
        var json = JsonSerializer.SerializeToNode(this, Json)!.AsObject();
        foreach (string key in IsGptNeoX ? LlamaOnlyKeys : GptNeoXOnlyKeys) json.Remove(key);
        foreach (string key in new[] { "num_key_value_heads", "head_dim", "attention_bias", "architectures", "bos_token_id", "rope_scaling", "hidden_act" })
            if (json[key] is null) json.Remove(key);
        if (ModelType == "qwen2") json.Remove("mlp_bias");
        return json;
    }

    /// <summary>Writes <c>config.json</c> atomically.</summary>
    public void Save(string path) => DataFiles.WriteJson(path, ToJson());

    /// <summary>Parameters of a model of this shape (embeddings and output head included; a tied head counts once).</summary>
    public long ParameterCount()
    {
        long h = HiddenSize, i = IntermediateSize, v = VocabSize, q = (long)NumAttentionHeads * HeadDim, kv = (long)KeyValueHeads * HeadDim;
        long layer = IsGptNeoX
            ? 2 * 2 * h /* two LayerNorms */ + 3 * h * h + h * h + (QkvBias ? 3 * h : 0) + (OutputBias ? h : 0) + (h * i + i) + (i * h + h)
            : 2 * h /* two RMSNorms */ + h * (q + 2 * kv) + q * h + (QkvBias ? q + 2 * kv : 0) + (OutputBias ? h : 0) + 3 * h * i + (MlpBias ? 2 * i + h : 0);
        long finalNorm = IsGptNeoX ? 2 * h : h;
        return v * h * (TieWordEmbeddings ? 1 : 2) + NumHiddenLayers * layer + finalNorm;
    }
}

/// <summary>
/// <c>rope_scaling</c>: <c>llama3</c> (Llama 3.1/3.2: low frequencies divided by <see cref="Factor"/>, high ones kept,
/// a smooth blend between) or <c>linear</c> (every frequency divided by <see cref="Factor"/>).
/// </summary>
public sealed record RopeScaling
{
    /// <summary><c>llama3</c> or <c>linear</c> (HF's newer key).</summary>
    [JsonPropertyName("rope_type")] public string? RopeType { get; init; }

    /// <summary>The older key for the same thing.</summary>
    [JsonPropertyName("type")] public string? Type { get; init; }

    /// <summary>How much longer the context is than the original one.</summary>
    [JsonPropertyName("factor")] public double Factor { get; init; } = 1;

    /// <summary>llama3: wavelengths above original context / this are scaled fully.</summary>
    [JsonPropertyName("low_freq_factor")] public double LowFreqFactor { get; init; } = 1;

    /// <summary>llama3: wavelengths below original context / this are kept.</summary>
    [JsonPropertyName("high_freq_factor")] public double HighFreqFactor { get; init; } = 4;

    /// <summary>llama3: the context the frequencies were trained for.</summary>
    [JsonPropertyName("original_max_position_embeddings")] public int OriginalMaxPositionEmbeddings { get; init; } = 8192;

    /// <summary>The scaling kind, from whichever key is set.</summary>
    [JsonIgnore] public string Kind => RopeType ?? Type ?? "default";

    internal void Check(Action<bool, string> require)
    {
        require(Kind is "llama3" or "linear" or "default", $"rope_scaling type \"{Kind}\" is not supported (llama3, linear)");
        require(Factor > 0, $"rope_scaling factor {Factor} must be positive");
        if (Kind == "llama3")
            require(LowFreqFactor > 0 && HighFreqFactor > LowFreqFactor && OriginalMaxPositionEmbeddings > 0,
                $"rope_scaling llama3 needs high_freq_factor ({HighFreqFactor}) > low_freq_factor ({LowFreqFactor}) > 0 and a positive original_max_position_embeddings");
    }

    /// <summary>Rescales rotary inverse frequencies in float32, step by step as HF's <c>_compute_llama3_parameters</c> does.</summary>
    public float[] Apply(float[] inverseFrequencies)
    {
        float factor = (float)Factor;
        if (Kind == "linear") return inverseFrequencies.Select(f => f / factor).ToArray();
        if (Kind != "llama3") return inverseFrequencies;
        float low = (float)LowFreqFactor, high = (float)HighFreqFactor, original = OriginalMaxPositionEmbeddings;
        float lowWavelength = original / low, highWavelength = original / high;
        return inverseFrequencies.Select(f =>
        {
            float wavelength = 2 * MathF.PI / f;
            if (wavelength < highWavelength) return f;
            if (wavelength > lowWavelength) return f / factor;
            float smooth = (original / wavelength - low) / (high - low);
            return (1 - smooth) * f / factor + smooth * f;
        }).ToArray();
    }
}

/// <summary>A token id or a list of them (<c>eos_token_id</c> in Llama 3 configs), written back in the same form.</summary>
sealed class TokenIdsConverter : JsonConverter<IReadOnlyList<int>>
{
    public override IReadOnlyList<int> Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.TokenType switch
    {
        JsonTokenType.Number => [reader.GetInt32()],
        JsonTokenType.StartArray => JsonSerializer.Deserialize<int[]>(ref reader, options)!,
        JsonTokenType.Null => [0],
        _ => throw new JsonException("a token id must be a number or a list of numbers"),
    };

    public override void Write(Utf8JsonWriter writer, IReadOnlyList<int> value, JsonSerializerOptions options)
    {
        if (value.Count == 1) writer.WriteNumberValue(value[0]);
        else JsonSerializer.Serialize(writer, value.ToArray(), options);
    }
}
