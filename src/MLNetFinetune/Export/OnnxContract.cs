namespace MLNetFinetune.Export;

/// <summary>
/// The names of the exported graph's inputs and outputs, shared by the exporter, the ONNX Runtime generator and
/// genai_config.json (whose <c>%d</c> patterns are the layer-indexed names below). Hugging Face's Optimum and ONNX
/// Runtime GenAI use the same names for decoder-only models with a cache.
/// </summary>
public static class OnnxContract
{
    /// <summary>Token ids <c>[batch, sequence]</c>, int64.</summary>
    public const string InputIds = "input_ids";

    /// <summary>1 for real tokens, 0 for padding, over past and new tokens <c>[batch, total_sequence]</c>, int64.</summary>
    public const string AttentionMask = "attention_mask";

    /// <summary>Positions of the new tokens <c>[batch, sequence]</c>, int64.</summary>
    public const string PositionIds = "position_ids";

    /// <summary>Logits <c>[batch, sequence, vocab]</c>, float32.</summary>
    public const string Logits = "logits";

    /// <summary>The <c>%d</c> patterns of the cache names (genai_config.json's form).</summary>
    public const string PastKeyPattern = "past_key_values.%d.key", PastValuePattern = "past_key_values.%d.value",
        PresentKeyPattern = "present.%d.key", PresentValuePattern = "present.%d.value";

    /// <summary>Layer <paramref name="layer"/>'s cached keys going in <c>[batch, heads, past_sequence, head_dim]</c>.</summary>
    public static string PastKey(int layer) => Named(PastKeyPattern, layer);

    /// <summary>Layer <paramref name="layer"/>'s cached values going in.</summary>
    public static string PastValue(int layer) => Named(PastValuePattern, layer);

    /// <summary>Layer <paramref name="layer"/>'s keys coming out, past and new <c>[batch, heads, total_sequence, head_dim]</c>.</summary>
    public static string PresentKey(int layer) => Named(PresentKeyPattern, layer);

    /// <summary>Layer <paramref name="layer"/>'s values coming out.</summary>
    public static string PresentValue(int layer) => Named(PresentValuePattern, layer);

    static string Named(string pattern, int layer) => pattern.Replace("%d", layer.ToString(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
}
