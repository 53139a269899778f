using System.CommandLine;
using MLNetFinetune.Course;
using MLNetFinetune.Export;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Cli;

/// <summary><c>quickstart</c>: the bundled facts lesson end to end (<see cref="FactsLesson"/>).</summary>
static class QuickstartCommand
{
    public static Command Create(TextWriter output)
    {
        var data = new Option<string?>("--data") { Description = "Folder with train.jsonl and heldout.jsonl (default: the bundled examples/data/facts)." };
        var baseModel = new Option<string?>("--base") { Description = "The base model directory (default: the bundled models/facts-base)." };
        var outDir = new Option<string>("--out") { Description = "Output folder: finetune/ (model, metrics.csv, loss.png) and onnx/.", DefaultValueFactory = _ => Path.Combine("runs", "quickstart") };
        var defaults = new FactsLessonOptions { Data = "", BaseModel = "", Output = "" };
        var epochs = new Option<int>("--epochs") { Description = "Passes over the finetuning pairs (with --steps 0).", DefaultValueFactory = _ => defaults.Epochs };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps (about 1.7 epochs by default; 0: use --epochs).", DefaultValueFactory = _ => defaults.MaxSteps };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => defaults.LearningRate };
        var batch = new Option<int>("--batch-size") { Description = "Pairs per step.", DefaultValueFactory = _ => defaults.BatchSize };
        var lora = new Option<int>("--lora-rank") { Description = "Train LoRA adapters of this rank instead of every weight (0: full finetuning).", DefaultValueFactory = _ => defaults.LoraRank };
        var maxRows = new Option<int>("--max-heldout") { Description = "Score at most this many held-out pairs of each kind (0: all).", DefaultValueFactory = _ => 0 };
        var threads = new Option<int>("--threads") { Description = "libtorch threads (0: all cores).", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => 0 };
        var device = new Option<string>("--device") { Description = "auto (CUDA when libtorch sees a GPU), cpu, cuda or cuda:N; ONNX Runtime follows with its auto provider.", DefaultValueFactory = _ => defaults.Device };
        var quantize = new Option<string>("--quantize") { Description = "Also export the finetuned model with int4 or int8 weights and score it (ONNX Runtime) against float32 on the held-out pairs.", DefaultValueFactory = _ => "none" };
        quantize.AcceptOnlyFromAmong("none", "int4", "int8");
        var command = new Command("quickstart",
            "The course's lesson on the bundled facts: score the pretrained base model on held-out entities, finetune it on question/answer pairs, " +
            "score again, export to ONNX and answer with ONNX Runtime. The last line is a JSON summary.")
        {
            data, baseModel, outDir, epochs, steps, lr, batch, lora, maxRows, threads, seed, device, quantize,
        };
        command.SetAction(result =>
        {
            FactsLesson.Run(new FactsLessonOptions
            {
            Data = result.GetValue(data) ?? Bundled(Path.Combine("examples", "data", "facts"), "train.jsonl", "--data"),
            BaseModel = result.GetValue(baseModel) ?? Bundled(Path.Combine("models", "facts-base"), "config.json", "--base"),
            Output = result.GetValue(outDir)!, Epochs = result.GetValue(epochs), MaxSteps = result.GetValue(steps), LearningRate = result.GetValue(lr),
            BatchSize = result.GetValue(batch), LoraRank = result.GetValue(lora), MaxHeldOutRows = result.GetValue(maxRows), Threads = result.GetValue(threads), Seed = result.GetValue(seed),
            Device = result.GetValue(device)!, Quantization = WeightQuantization.Parse(result.GetValue(quantize)),
            }, output, new CliLessonDisplay(output));
            return 0;
        });
        return command;
    }

    // The bundled folder, found from the working directory or the program's folder upwards (the repository root).
    internal static string Bundled(string folder, string file, string option)
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, folder, file))) return Path.Combine(dir.FullName, folder);
        throw new DirectoryNotFoundException($"the bundled {folder} was not found above {Directory.GetCurrentDirectory()}; run inside the repository or pass {option}");
    }
}

/// <summary>The lesson's long work on the CLI: progress bars and spinners on a terminal, lines otherwise; loss.png.</summary>
sealed class CliLessonDisplay(TextWriter output) : ILessonDisplay
{
    public T Train<T>(string title, Func<IProgress<TrainingProgress>, T> train) => ProgressDisplay.Train(output, title, train);

    public T Timed<T>(string title, Func<T> work) => ProgressDisplay.Timed(output, title, work);

    public string? PlotLoss(string runDirectory, string title) => LossPlot.Write(runDirectory, title);
}
