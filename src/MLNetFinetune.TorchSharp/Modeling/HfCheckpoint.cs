using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>
/// Moves weights between a model and a Hugging Face directory: <c>model.safetensors</c> or shards with their index,
/// F32/F16/BF16, HF names.
/// </summary>
public static class HfCheckpoint
{
    // Buffers some HF checkpoints carry that are recomputed here, not learned: accepted and ignored.
    static bool IsKnownBuffer(string name) =>
        name.EndsWith(".attention.bias", StringComparison.Ordinal) || name.EndsWith(".attention.masked_bias", StringComparison.Ordinal)
        || name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>Loads a model directory (ours, or a published Pythia, SmolLM2, Qwen2.5, TinyLlama or Llama folder) onto <paramref name="device"/>.</summary>
    public static (TransformerForCausalLM Model, TextTokenizer Tokenizer) Load(string directory, Device? device = null)
    {
        var (config, tokenizer) = ModelDirectory.ReadConfigAndTokenizer(directory);
        var model = new TransformerForCausalLM(config);
        LoadWeights(model, directory);
        if (device != null) model.to(device);
        return (model, tokenizer);
    }

    /// <summary>
    /// Copies every parameter from the weights of <paramref name="directory"/>, one tensor at a time (so loading needs
    /// little beyond the float32 model); a missing, unexpected or mis-shaped tensor fails naming it. A tied model's file
    /// may also hold the head (some exporters write it): it must then equal the embedding's shape and is not read.
    /// </summary>
    public static void LoadWeights(TransformerForCausalLM model, string directory)
    {
        using var checkpoint = SafeTensorsCheckpoint.Open(directory);
        var parameters = model.state_dict();
        string tiedHead = model.Config.IsGptNeoX ? "embed_out.weight" : "lm_head.weight";
        var unexpected = checkpoint.Tensors.Keys.Where(k => !parameters.ContainsKey(k) && !IsKnownBuffer(k) && !(model.Config.TieWordEmbeddings && k == tiedHead))
            .Order(StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException($"{checkpoint.Source}: tensors the {model.Config.ModelType} model of config.json does not have: {string.Join(", ", unexpected.Take(5))}" +
                (unexpected.Count > 5 ? $" and {unexpected.Count - 5} more" : "") + ". Do config.json and the weights belong to the same model?");
        using var _ = no_grad();
        // One float32 buffer, grown to the largest tensor, takes each tensor in turn and libtorch copies it into the
        // parameter: loading holds the model and about one tensor beside it, whatever the number of tensors.
        float[] buffer = [];
        foreach (var (name, parameter) in parameters)
        {
            if (!checkpoint.Tensors.TryGetValue(name, out var info))
                throw new InvalidDataException($"{checkpoint.Source}: no tensor '{name}', which the config's model needs" +
                    (name == tiedHead ? " (is the head tied? set tie_word_embeddings in config.json)." : "."));
            if (!info.Shape.SequenceEqual(parameter.shape))
                throw new InvalidDataException($"{checkpoint.Source}: tensor '{name}' is [{string.Join(", ", info.Shape)}] but the config gives " +
                    $"[{string.Join(", ", parameter.shape)}]: config.json and the weights disagree.");
            long count = info.ElementCount;
            if (buffer.Length < count) buffer = GC.AllocateUninitializedArray<float>(checked((int)count), pinned: true); // never moved while libtorch reads it
            checkpoint.ReadFloat32(name, buffer.AsSpan(0, (int)count));
            using var flat = frombuffer(buffer, ScalarType.Float32, count: count);
            using var values = flat.view(parameter.shape);
            parameter.copy_(values);
        }
    }

    /// <summary>
    /// Writes config.json, the weights (float32, HF names; sharded with an index above <paramref name="maxShardBytes"/>,
    /// as save_pretrained does), the tokenizer and generation_config.json. A tied head is not written.
    /// </summary>
    public static void Save(TransformerForCausalLM model, TextTokenizer tokenizer, string directory, long maxShardBytes = SafeTensorsCheckpoint.DefaultMaxShardBytes)
    {
        ModelDirectory.WriteConfigAndTokenizer(directory, model.Config with { TorchDtype = "float32" }, tokenizer);
        var state = model.state_dict();
        var layout = state.Select(p => (p.Key, p.Value.shape)).ToList();
        SafeTensorsCheckpoint.Save(directory, layout, name =>
        {
            using var cpu = state[name].detach().to(float32).cpu().contiguous();
            return cpu.data<float>().ToArray();
        }, maxShardBytes);
    }
}
