using System.Runtime.InteropServices;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>Moves GPT-NeoX weights between a model and a Hugging Face directory (<c>model.safetensors</c> with HF names).</summary>
public static class GptNeoXCheckpoint
{
    // Buffers HF checkpoints of GPT-NeoX carry that are recomputed here, not learned: accepted and ignored.
    static bool IsKnownBuffer(string name) =>
        name.EndsWith(".attention.bias", StringComparison.Ordinal) || name.EndsWith(".attention.masked_bias", StringComparison.Ordinal)
        || name.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal);

    /// <summary>Loads a model directory (ours, or a downloaded Pythia folder) onto <paramref name="device"/>.</summary>
    public static (GptNeoXForCausalLM Model, TextTokenizer Tokenizer) Load(string directory, Device? device = null)
    {
        var (config, tokenizer) = ModelDirectory.ReadConfigAndTokenizer(directory);
        var model = new GptNeoXForCausalLM(config);
        LoadWeights(model, ModelDirectory.PathOf(directory, ModelDirectory.WeightsFile));
        if (device != null) model.to(device);
        return (model, tokenizer);
    }

    /// <summary>Copies every parameter from a safetensors file; a missing, unexpected or mis-shaped tensor fails naming it.</summary>
    public static void LoadWeights(GptNeoXForCausalLM model, string path)
    {
        using var file = SafeTensorsFile.Open(path);
        var parameters = model.state_dict();
        var unexpected = file.Tensors.Keys.Where(k => !parameters.ContainsKey(k) && !IsKnownBuffer(k)).Order().ToList();
        if (unexpected.Count > 0)
            throw new InvalidDataException($"{path}: tensors the GPT-NeoX model does not have: {string.Join(", ", unexpected.Take(5))}" +
                (unexpected.Count > 5 ? $" and {unexpected.Count - 5} more" : "") + ". Is this a GPT-NeoX (Pythia) checkpoint?");
        using var _ = no_grad();
        foreach (var (name, parameter) in parameters)
        {
            if (!file.Tensors.TryGetValue(name, out var info))
                throw new InvalidDataException($"{path}: no tensor '{name}', which the config's model needs.");
            if (!info.Shape.SequenceEqual(parameter.shape))
                throw new InvalidDataException($"{path}: tensor '{name}' is [{string.Join(", ", info.Shape)}] but the config gives " +
                    $"[{string.Join(", ", parameter.shape)}]: config.json and the weights disagree.");
            using var values = tensor(file.ReadFloat32(name), parameter.shape, dtype: float32);
            parameter.copy_(values);
        }
    }

    /// <summary>Writes config.json, model.safetensors (float32, HF names), the tokenizer and generation_config.json.</summary>
    public static void Save(GptNeoXForCausalLM model, TextTokenizer tokenizer, string directory)
    {
        ModelDirectory.WriteConfigAndTokenizer(directory, model.Config, tokenizer);
        var tensors = model.state_dict().Select(p =>
        {
            using var cpu = p.Value.detach().to(float32).cpu().contiguous();
            return (p.Key, p.Value.shape, cpu.data<float>().ToArray());
        });
        SafeTensorsFile.WriteFloat32(ModelDirectory.PathOf(directory, ModelDirectory.WeightsFile), tensors,
            new Dictionary<string, string> { ["format"] = "pt" });
    }
}
