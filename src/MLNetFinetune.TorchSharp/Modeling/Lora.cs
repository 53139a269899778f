using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>Low-rank adaptation: which layers get adapters, their rank, scale and dropout.</summary>
public sealed record LoraOptions
{
    /// <summary>Rank r of the update B·A. Default 8.</summary>
    public int Rank { get; init; } = 8;

    /// <summary>The update is scaled by alpha / r. Default 16.</summary>
    public double Alpha { get; init; } = 16;

    /// <summary>Dropout on the adapter's input while training. Default 0.05.</summary>
    public double Dropout { get; init; } = 0.05;

    /// <summary>Means every linear layer but the output head, as PEFT's <c>all-linear</c> does.</summary>
    public const string AllLinear = "all-linear";

    /// <summary>
    /// Layers (by HF name) that get adapters: <c>query_key_value</c>, <c>dense</c>, <c>dense_h_to_4h</c>, <c>dense_4h_to_h</c>
    /// (GPT-NeoX); <c>q_proj</c>, <c>k_proj</c>, <c>v_proj</c>, <c>o_proj</c>, <c>gate_proj</c>, <c>up_proj</c>, <c>down_proj</c>
    /// (Llama family); or <see cref="AllLinear"/> (default).
    /// </summary>
    public IReadOnlyList<string> TargetModules { get; init; } = [AllLinear];

    internal void Validate()
    {
        if (Rank <= 0) throw new ArgumentOutOfRangeException(nameof(Rank), "LoRA rank must be positive.");
        if (Alpha <= 0) throw new ArgumentOutOfRangeException(nameof(Alpha), "LoRA alpha must be positive.");
        if (Dropout is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Dropout), "LoRA dropout must be in [0, 1).");
        if (TargetModules.Count == 0) throw new ArgumentException("LoRA needs at least one target module (or all-linear).");
    }
}

/// <summary>
/// The adapters of a model, kept beside its layers (the model adds their update where a layer has one): for each targeted linear layer W, matrices A (r × in, Kaiming-uniform) and B (out × r,
/// zeros), so the layer computes W·x + (alpha/r)·B·A·dropout(x) and starts out unchanged. Saved in PEFT's layout
/// (<c>adapter_config.json</c>, <c>adapter_model.safetensors</c> with <c>base_model.model.&lt;layer&gt;.lora_A.weight</c>).
/// </summary>
public sealed class LoraAdapters : IDisposable
{
    internal LoraAdapters(LoraOptions options, IReadOnlyList<(string Name, Linear Layer)> layers, Device device)
    {
        Options = options;
        Scale = options.Alpha / options.Rank;
        ScaleScalar = Scale.ToScalar();
        foreach (var (name, layer) in layers)
        {
            long input = layer.weight!.shape[1], output = layer.weight.shape[0];
            var a = new Parameter(empty(options.Rank, input, device: device));
            var b = new Parameter(zeros(output, options.Rank, device: device));
            using (no_grad()) nn.init.kaiming_uniform_(a, Math.Sqrt(5), nn.init.FanInOut.FanIn, nn.init.NonlinearityType.LeakyReLU);
            Pairs[layer] = (name, a, b);
        }
    }

    /// <summary>The settings the adapters were made with.</summary>
    public LoraOptions Options { get; }

    /// <summary>alpha / r.</summary>
    public double Scale { get; }

    // Held with the adapters: a Scalar made per call could be finalized while libtorch reads it.
    internal Scalar ScaleScalar { get; }

    internal Dictionary<Linear, (string Name, Parameter A, Parameter B)> Pairs { get; } = new(ReferenceEqualityComparer.Instance);

    /// <summary>
    /// A targeted layer's output <paramref name="y"/> plus its update <c>(alpha/r)·B·A·dropout(x)</c>, in the compute
    /// type when one is set; other layers' outputs unchanged.
    /// </summary>
    internal Tensor Apply(Linear layer, Tensor x, Tensor y, bool training, ScalarType? computeType)
    {
        if (!Pairs.TryGetValue(layer, out var adapter)) return y;
        var input = Options.Dropout > 0 ? functional.dropout(x, Options.Dropout, training) : x;
        var (a, b) = computeType is { } t ? (adapter.A.to(t), adapter.B.to(t)) : ((Tensor)adapter.A, (Tensor)adapter.B);
        return y.add(functional.linear(functional.linear(input.to(a.dtype), a), b), ScaleScalar);
    }

    /// <summary>The trainable parameters (every A and B).</summary>
    public IEnumerable<Parameter> Parameters() => Pairs.Values.SelectMany(p => new[] { p.A, p.B });

    /// <summary>Number of trainable values.</summary>
    public long ParameterCount => Parameters().Sum(p => p.numel());

    static string Key(string layer, string matrix) => $"base_model.model.{layer}.lora_{matrix}.weight";

    /// <summary>Writes <c>adapter_config.json</c> and <c>adapter_model.safetensors</c> (PEFT's layout) into <paramref name="directory"/>.</summary>
    public void Save(string directory, string baseModel)
    {
        Directory.CreateDirectory(directory);
        var config = new JsonObject
        {
            ["peft_type"] = "LORA", ["task_type"] = "CAUSAL_LM", ["r"] = Options.Rank, ["lora_alpha"] = Options.Alpha,
            ["lora_dropout"] = Options.Dropout, ["target_modules"] = new JsonArray(Options.TargetModules.Select(t => (JsonNode)t).ToArray()),
            ["bias"] = "none", ["fan_in_fan_out"] = false, ["inference_mode"] = true, ["base_model_name_or_path"] = baseModel,
        };
        DataFiles.WriteJson(Path.Combine(directory, "adapter_config.json"), config);
        SafeTensorsFile.WriteFloat32(Path.Combine(directory, "adapter_model.safetensors"),
            Pairs.Values.SelectMany(p => new[] { (Key(p.Name, "A"), p.A.shape, Values(p.A)), (Key(p.Name, "B"), p.B.shape, Values(p.B)) }));
    }

    /// <summary>Loads adapter weights saved by <see cref="Save"/> into these adapters (same layers and rank).</summary>
    public void Load(string directory)
    {
        string path = Path.Combine(directory, "adapter_model.safetensors");
        using var file = SafeTensorsFile.Open(path);
        using var _ = no_grad();
        foreach (var (name, a, b) in Pairs.Values)
            foreach (var (matrix, parameter) in new[] { ("A", a), ("B", b) })
            {
                string key = Key(name, matrix);
                if (!file.Tensors.TryGetValue(key, out var info))
                    throw new InvalidDataException($"{path}: no tensor '{key}'; were the adapters made for other target modules?");
                if (!info.Shape.SequenceEqual(parameter.shape))
                    throw new InvalidDataException($"{path}: '{key}' is [{string.Join(", ", info.Shape)}], expected [{string.Join(", ", parameter.shape)}] (another rank?).");
                using var values = tensor(file.ReadFloat32(key), parameter.shape);
                parameter.copy_(values);
            }
    }

    /// <summary>Reads the options of saved adapters from their <c>adapter_config.json</c>.</summary>
    public static LoraOptions ReadOptions(string directory)
    {
        string path = Path.Combine(directory, "adapter_config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"'{directory}' holds no adapter_config.json.", path);
        JsonObject config;
        try
        {
            config = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new DataFileException(path, 0, "expected a JSON object");
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "adapter config", e);
        }
        T Field<T>(string name, Func<JsonNode, T> read)
        {
            if (config[name] is not { } node) throw new DataFileException(path, 0, $"no '{name}' field", field: name);
            try { return read(node); }
            catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException)
            {
                throw new DataFileException(path, 0, $"field '{name}' has an unexpected value {node.ToJsonString()} ({e.Message.TrimEnd('.')})", field: name, inner: e);
            }
        }
        return new LoraOptions
        {
            Rank = Field("r", n => n.GetValue<int>()), Alpha = Field("lora_alpha", n => n.GetValue<double>()),
            Dropout = config["lora_dropout"] is null ? 0 : Field("lora_dropout", n => n.GetValue<double>()),
            TargetModules = Field("target_modules", n => n.AsArray().Select(t => t!.GetValue<string>()).ToList()),
        };
    }

    static float[] Values(Tensor t)
    {
        using var cpu = t.detach().cpu().contiguous();
        return cpu.data<float>().ToArray();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var (_, a, b) in Pairs.Values) { a.Dispose(); b.Dispose(); }
        ScaleScalar.Dispose();
        Pairs.Clear();
    }
}
