using System.Text.Json;
using System.Text.Json.Serialization;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>One row of the metrics history (also a line of <c>metrics.csv</c>).</summary>
public sealed record MetricRow(
    [property: JsonPropertyName("step")] int Step,
    [property: JsonPropertyName("epoch")] int Epoch,
    [property: JsonPropertyName("tokens")] long Tokens,
    [property: JsonPropertyName("loss")] double Loss,
    [property: JsonPropertyName("learning_rate")] double LearningRate,
    [property: JsonPropertyName("grad_norm")] double GradientNorm,
    [property: JsonPropertyName("tokens_per_s")] double TokensPerSecond,
    [property: JsonPropertyName("eval_loss")] double? EvalLoss,
    [property: JsonPropertyName("elapsed_s")] double ElapsedSeconds);

/// <summary>Where a run stands: enough to continue it exactly.</summary>
public sealed record TrainerState(
    [property: JsonPropertyName("step")] int Step,
    [property: JsonPropertyName("total_steps")] int TotalSteps,
    [property: JsonPropertyName("epoch")] int Epoch,
    [property: JsonPropertyName("examples_in_epoch")] long ExamplesInEpoch,
    [property: JsonPropertyName("tokens")] long Tokens,
    [property: JsonPropertyName("best_eval_loss")] double? BestEvalLoss,
    [property: JsonPropertyName("seed")] int Seed,
    [property: JsonPropertyName("shuffle_buffer")] int ShuffleBuffer,
    [property: JsonPropertyName("full_shuffle")] bool FullShuffle,
    [property: JsonPropertyName("torch_rng_state")] string TorchRngState,
    [property: JsonPropertyName("history")] IReadOnlyList<MetricRow> History,
    [property: JsonPropertyName("length_group")] int LengthGroup = 0,
    [property: JsonPropertyName("world_size")] int WorldSize = 1);

/// <summary>
/// Checkpoints: a model directory (HF layout) plus <c>optimizer.bin</c> (TorchSharp's AdamW state, also for <see cref="FlatAdamW"/>) and
/// <c>trainer_state.json</c>, written into a temporary folder that is renamed into place, so a killed run never
/// leaves a half checkpoint.
/// </summary>
public static class TrainingCheckpoint
{
    /// <summary>File names inside a checkpoint.</summary>
    public const string OptimizerFile = "optimizer.bin", StateFile = "trainer_state.json";

    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>The folder of step checkpoints.</summary>
    public static string Folder(string outputDirectory) => Path.Combine(outputDirectory, "checkpoints");

    /// <summary>Writes a checkpoint at <paramref name="directory"/> atomically (replacing one already there).</summary>
    public static void Write(string directory, TransformerForCausalLM model, TextTokenizer tokenizer, global::TorchSharp.Modules.OptimizerHelper optimizer, TrainerState state) =>
        Write(directory, model, tokenizer, optimizer.save_state_dict, state);

    // Both optimizer kinds write the same optimizer.bin (see FlatAdamW), so either resumes the other's checkpoint.
    internal static void Write(string directory, TransformerForCausalLM model, TextTokenizer tokenizer, ITrainingOptimizer optimizer, TrainerState state) =>
        Write(directory, model, tokenizer, optimizer.save_state_dict, state);

    static void Write(string directory, TransformerForCausalLM model, TextTokenizer tokenizer, Action<string> saveOptimizer, TrainerState state)
    {
        string temp = $"{directory}.tmp-{Path.GetRandomFileName()}";
        try
        {
            // A LoRA run's checkpoint holds only the adapters: the frozen base never changes.
            if (model.Lora is { } lora) lora.Save(temp, baseModel: "");
            else HfCheckpoint.Save(model, tokenizer, temp);
            saveOptimizer(Path.Combine(temp, OptimizerFile));
            DataFiles.WriteAtomically(Path.Combine(temp, StateFile), s => JsonSerializer.Serialize(s, state, Json));
            string? old = null;
            if (Directory.Exists(directory))
            {
                old = $"{directory}.old-{Path.GetRandomFileName()}";
                Directory.Move(directory, old);
            }
            Directory.Move(temp, directory);
            if (old != null) Directory.Delete(old, recursive: true);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
    }

    /// <summary>Loads a checkpoint's weights into <paramref name="model"/>: its adapters for a LoRA run, else the whole model.</summary>
    public static void LoadWeights(string directory, TransformerForCausalLM model)
    {
        bool adapters = File.Exists(Path.Combine(directory, "adapter_model.safetensors"));
        if (adapters != (model.Lora != null))
            throw new InvalidOperationException(adapters
                ? $"{directory} holds LoRA adapters, but the model has none attached: resume with the same Lora options."
                : $"{directory} holds a full model, but the model has LoRA adapters: resume without Lora options.");
        if (model.Lora is { } lora) lora.Load(directory);
        else HfCheckpoint.LoadWeights(model, directory);
    }

    /// <summary>Reads a checkpoint's trainer state.</summary>
    public static TrainerState ReadState(string directory)
    {
        string path = Path.Combine(directory, StateFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"'{directory}' is not a checkpoint: it has no {StateFile}.", path);
        TrainerState? state;
        try
        {
            state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(path), Json);
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "trainer state", e, withJsonPath: true);
        }
        if (state == null) throw new DataFileException(path, 0, "empty trainer state");
        if (state.TorchRngState == null) throw new DataFileException(path, 0, "trainer state has no 'torch_rng_state'", field: "torch_rng_state");
        if (state.History == null) throw new DataFileException(path, 0, "trainer state has no 'history'", field: "history");
        return state;
    }

    /// <summary>Loads a checkpoint's optimizer state into <paramref name="optimizer"/> (made for the same parameters).</summary>
    public static void LoadOptimizer(string directory, global::TorchSharp.Modules.OptimizerHelper optimizer) =>
        optimizer.load_state_dict(Path.Combine(directory, OptimizerFile));

    internal static void LoadOptimizer(string directory, ITrainingOptimizer optimizer) =>
        optimizer.load_state_dict(Path.Combine(directory, OptimizerFile));

    /// <summary>
    /// The checkpoint a <c>ResumeFrom</c> path means: the folder itself when it is a checkpoint, else the newest
    /// step checkpoint of an output directory.
    /// </summary>
    public static string Resolve(string path)
    {
        if (File.Exists(Path.Combine(path, StateFile))) return path;
        string folder = Folder(path);
        var latest = Directory.Exists(folder)
            ? StepCheckpoints(folder).LastOrDefault()
            : null;
        return latest ?? throw new DirectoryNotFoundException($"Nothing to resume from at '{path}': it is not a checkpoint and holds no checkpoints/step-* folder.");
    }

    /// <summary>Deletes all but the newest <paramref name="keep"/> step checkpoints.</summary>
    public static void Prune(string outputDirectory, int keep)
    {
        string folder = Folder(outputDirectory);
        if (!Directory.Exists(folder)) return;
        var steps = StepCheckpoints(folder);
        foreach (string old in steps.Take(Math.Max(0, steps.Count - keep))) Directory.Delete(old, recursive: true);
        // Folders a killed run left half-written.
        foreach (string leftover in Directory.GetDirectories(folder).Where(d => IsTemporary(Path.GetFileName(d))))
            Directory.Delete(leftover, recursive: true);
    }

    static List<string> StepCheckpoints(string folder) => Directory.GetDirectories(folder, "step-*")
        .Where(d => !IsTemporary(Path.GetFileName(d))).Order(StringComparer.Ordinal).ToList();

    static bool IsTemporary(string name) => name.Contains(".tmp-", StringComparison.Ordinal) || name.Contains(".old-", StringComparison.Ordinal);

    /// <summary>The torch RNG state as base64 (restored with <see cref="RestoreRng"/>).</summary>
    public static string CaptureRng()
    {
        using var state = torch.get_rng_state();
        return Convert.ToBase64String(state.data<byte>().ToArray());
    }

    /// <summary>Restores a state from <see cref="CaptureRng"/>.</summary>
    public static void RestoreRng(string state)
    {
        using var tensor = torch.tensor(Convert.FromBase64String(state), dtype: uint8);
        torch.set_rng_state(tensor);
    }

    /// <summary>Writes the metrics history as CSV, atomically.</summary>
    public static void WriteMetrics(string path, IEnumerable<MetricRow> history) => DataFiles.WriteAtomically(path, s =>
    {
        using var w = new StreamWriter(s, leaveOpen: true) { NewLine = "\n" };
        w.WriteLine("step,epoch,tokens,loss,learning_rate,grad_norm,tokens_per_s,eval_loss,eval_perplexity,elapsed_s");
        var c = System.Globalization.CultureInfo.InvariantCulture;
        foreach (var r in history)
            w.WriteLine(string.Join(",", r.Step.ToString(c), r.Epoch.ToString(c), r.Tokens.ToString(c), r.Loss.ToString("R", c), r.LearningRate.ToString("R", c),
                r.GradientNorm.ToString("R", c), r.TokensPerSecond.ToString("F1", c), r.EvalLoss?.ToString("R", c) ?? "",
                r.EvalLoss is { } e ? Math.Exp(e).ToString("R", c) : "", r.ElapsedSeconds.ToString("F2", c)));
    });
}
