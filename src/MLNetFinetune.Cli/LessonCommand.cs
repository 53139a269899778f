using System.CommandLine;
using MLNetFinetune.Course;

namespace MLNetFinetune.Cli;

/// <summary><c>lesson knowledge</c>: the course's second lesson, finetuning that changes and adds facts (<see cref="KnowledgeLesson"/>).</summary>
static class LessonCommand
{
    public static Command Create(TextWriter output)
    {
        var defaults = new KnowledgeLessonOptions { Data = "", TunedModel = "", Output = "" };
        var tuned = new Option<string>("--tuned")
        {
            Description = "The first lesson's finetuned model, which the edits start from (what `quickstart` writes).",
            DefaultValueFactory = _ => Path.Combine("runs", "quickstart", "finetune", "model"),
        };
        var data = new Option<string?>("--data") { Description = "Folder with facts.csv, train.jsonl and heldout.jsonl (default: the bundled examples/data/facts)." };
        var outDir = new Option<string>("--out") { Description = "Output folder: one run per lever.", DefaultValueFactory = _ => Path.Combine("runs", "knowledge") };
        var changed = new Option<int>("--changed") { Description = "Stored facts changed to another value.", DefaultValueFactory = _ => defaults.ChangedFacts };
        var added = new Option<int>("--new-entities") { Description = "Made-up countries added (four facts each).", DefaultValueFactory = _ => defaults.NewEntities };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps per lever.", DefaultValueFactory = _ => defaults.Steps };
        var lr = new Option<double>("--lr") { Description = "Peak learning rate (the LoRA lever uses ten times it).", DefaultValueFactory = _ => defaults.LearningRate };
        var replay = new Option<double>("--replay-ratio") { Description = "Replay levers: replayed rows per row about the edits.", DefaultValueFactory = _ => defaults.ReplayRatio };
        var probes = new Option<int>("--probes") { Description = "Untouched facts probed for locality, and first-lesson pairs of each kind scored.", DefaultValueFactory = _ => defaults.Probes };
        var levers = new Option<KnowledgeLever[]>("--levers") { Description = "The levers compared (default: all).", AllowMultipleArgumentsPerToken = true };
        var threads = new Option<int>("--threads") { Description = "libtorch threads (0: all cores).", DefaultValueFactory = _ => 0 };
        var seed = new Option<int>("--seed") { Description = "Random seed.", DefaultValueFactory = _ => 0 };
        var device = new Option<string>("--device") { Description = "auto, cpu, cuda or cuda:N.", DefaultValueFactory = _ => defaults.Device };
        var knowledge = new Command("knowledge",
            "Finetuning that corrects and adds facts: change facts the first lesson's model stored, add made-up countries, and compare levers " +
            "(plain pairs, paraphrases, replay, LoRA) on the trained question, paraphrases, prose and untouched facts. The last line is a JSON summary.")
        {
            tuned, data, outDir, changed, added, steps, lr, replay, probes, levers, threads, seed, device,
        };
        knowledge.SetAction(result =>
        {
            string from = result.GetValue(tuned)!;
            if (!File.Exists(Path.Combine(from, "config.json")))
                throw new DirectoryNotFoundException($"'{from}' holds no model. Run `mlnet-finetune quickstart` first (it writes runs/quickstart/finetune/model), or pass --tuned FOLDER.");
            KnowledgeLesson.Run(new KnowledgeLessonOptions
            {
                TunedModel = from, Data = result.GetValue(data) ?? QuickstartCommand.Bundled(Path.Combine("examples", "data", "facts"), "facts.csv", "--data"),
                Output = result.GetValue(outDir)!, ChangedFacts = result.GetValue(changed), NewEntities = result.GetValue(added), Steps = result.GetValue(steps),
                LearningRate = result.GetValue(lr), ReplayRatio = result.GetValue(replay),
                Probes = result.GetValue(probes), Levers = result.GetValue(levers) is { Length: > 0 } chosen ? chosen : defaults.Levers,
                Threads = result.GetValue(threads), Seed = result.GetValue(seed), Device = result.GetValue(device)!,
            }, output, new CliLessonDisplay(output));
            return 0;
        });
        return new Command("lesson", "The course's lessons beyond the quickstart.") { knowledge };
    }
}
