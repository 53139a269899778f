using System.CommandLine;
using Microsoft.ML;
using Microsoft.Data.Analysis;
using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TokenShards;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Cli;

/// <summary><c>pretrain</c>, <c>finetune</c> and <c>evaluate</c>: thin wrappers over the estimators and the evaluator.</summary>
static class TrainCommands
{
    // Options every training verb shares, mapped onto CausalLMTrainingOptions; their defaults are the options class's.
    sealed class Common
    {
        static readonly InstructionTuningOptions Defaults = new() { BaseModel = "", OutputDirectory = "" };

        public readonly Option<string> Out = new("--out") { Description = "Run directory: checkpoints, metrics.csv, model/.", Required = true };
        public readonly Option<int> Steps = new("--steps") { Description = "Optimizer steps (0: use --epochs).", DefaultValueFactory = _ => 0 };
        public readonly Option<int> Epochs = new("--epochs") { Description = "Passes over the data (when --steps is 0).", DefaultValueFactory = _ => 1 };
        public readonly Option<int> Block = new("--block-size") { Description = "Tokens per sequence.", DefaultValueFactory = _ => Defaults.BlockSize };
        public readonly Option<int> Batch = new("--batch-size") { Description = "Sequences per micro-batch.", DefaultValueFactory = _ => Defaults.MicroBatchSize };
        public readonly Option<double> Lr = new("--lr") { Description = "Peak learning rate (the cosine decay ends at a tenth of it).", DefaultValueFactory = _ => Defaults.LearningRate };
        public readonly Option<double> EvalFraction = new("--eval-fraction") { Description = "Held-out fraction.", DefaultValueFactory = _ => Defaults.EvalFraction };
        public readonly Option<string> Device = new("--device") { Description = "auto, cpu, cuda or cuda:N.", DefaultValueFactory = _ => Defaults.Device };
        public readonly Option<string> DType = new("--dtype") { Description = "float32 or bfloat16.", DefaultValueFactory = _ => Defaults.DType };
        public readonly Option<string> Optimizer = new Option<string>("--optimizer")
        {
            Description = "AdamW kind: flat (flat buffers, a few kernels per step), per-parameter (a loop over parameters), or auto (flat on CUDA, per-parameter on CPU).",
            DefaultValueFactory = _ => Kind(Defaults.Optimizer),
        }.AcceptOnlyFromAmong("auto", "flat", "per-parameter");
        public readonly Option<int> Threads = new("--threads") { Description = "libtorch threads (0: default).", DefaultValueFactory = _ => Defaults.Threads };
        public readonly Option<int> Seed = new("--seed") { Description = "Random seed.", DefaultValueFactory = _ => Defaults.Seed };
        public readonly Option<int> LogInterval = new("--log-interval") { Description = "Report progress and write metrics.csv every N steps.", DefaultValueFactory = _ => Defaults.LogInterval };
        public readonly Option<int> CheckpointInterval = new("--checkpoint-interval") { Description = "Write a checkpoint every N steps (0: only at the end).", DefaultValueFactory = _ => Defaults.CheckpointInterval };
        public readonly Option<string?> Resume = new("--resume") { Description = "Continue from a checkpoint or a run directory." };
        public readonly Option<int> CollectiveTimeout = new("--collective-timeout")
        {
            Description = "Launched as several ranks (mpirun -np N): seconds a rank waits in a collective before it gives the others up as dead.",
            DefaultValueFactory = _ => (int)MLNetFinetune.Distributed.MpiProcessGroup.DefaultTimeout.TotalSeconds,
        };

        public IEnumerable<Option> All => [Out, Steps, Epochs, Block, Batch, Lr, EvalFraction, Device, DType, Optimizer, Threads, Seed, LogInterval, CheckpointInterval, Resume, CollectiveTimeout];

        /// <summary>Runs a training verb alone, or as one rank of a data-parallel job when a launcher started several.</summary>
        public int Ranked(ParseResult r, TextWriter output, Func<MLNetFinetune.Distributed.IProcessGroup?, TextWriter, int> verb) =>
            RankedRun.Run(output, TimeSpan.FromSeconds(r.GetValue(CollectiveTimeout)), verb);

        static string Kind(AdamWKind kind) => kind switch { AdamWKind.Flat => "flat", AdamWKind.PerParameter => "per-parameter", _ => "auto" };

        /// <summary>Applies the shared settings to either trainer's options.</summary>
        public T Apply<T>(T options, ParseResult r, IProgress<TrainingProgress> progress, MLNetFinetune.Distributed.IProcessGroup? group) where T : CausalLMTrainingOptions
        {
            options.ProcessGroup = group;
            options.MaxSteps = r.GetValue(Steps);
            options.Epochs = r.GetValue(Steps) > 0 ? 0 : r.GetValue(Epochs);
            options.BlockSize = r.GetValue(Block);
            options.MicroBatchSize = r.GetValue(Batch);
            options.LearningRate = r.GetValue(Lr);
            options.EvalFraction = r.GetValue(EvalFraction);
            options.Device = r.GetValue(Device)!;
            options.DType = r.GetValue(DType)!;
            options.Optimizer = Enum.GetValues<AdamWKind>().First(k => Kind(k) == r.GetValue(Optimizer));
            options.Threads = r.GetValue(Threads);
            options.Seed = r.GetValue(Seed);
            options.ResumeFrom = r.GetValue(Resume);
            options.LogInterval = r.GetValue(LogInterval);
            options.CheckpointInterval = r.GetValue(CheckpointInterval);
            options.Progress = progress;
            return options;
        }

        /// <summary>Says which device trains and why (auto picks CUDA when libtorch sees a GPU).</summary>
        public void SayDevice(ParseResult r, TextWriter output) => output.WriteLine($"device: {TorchSharp.TorchRuntime.ChooseDevice(r.GetValue(Device)!).Description}");

        /// <summary>Draws the run's loss curve and says where the model and the plot are.</summary>
        public void Report(ParseResult r, TextWriter output, string title, TrainingResult? training)
        {
            string run = r.GetValue(Out)!;
            if (training is { GradientReductionTime: { } reducing, TrainingTime: var total } && total > TimeSpan.Zero)
                output.WriteLine($"gradient all-reduce: {reducing.TotalSeconds:F2} s of {total.TotalSeconds:F2} s training ({reducing / total:P1})");
            output.WriteLine($"model written to {Path.Combine(run, "model")}");
            if (LossPlot.Write(run, title) is { } plot) output.WriteLine($"loss curve: {plot}");
        }
    }

    public static Command Pretrain(TextWriter output)
    {
        var common = new Common();
        var corpus = new Option<string?>("--corpus") { Description = "Training text: .txt/.jsonl[.gz|.zst] file, folder or glob." };
        var shards = new Option<string?>("--shards") { Description = "Instead of --corpus: token shards written by `tokenize` (a folder with manifest.json), read in place; needs --tokenizer." };
        var text = new CorpusTextOptions();
        var tokenizer = new Option<string?>("--tokenizer") { Description = "A tokenizer folder; without it one is trained on the corpus (--vocab-size)." };
        var vocab = new Option<int>("--vocab-size") { Description = "Vocabulary of the tokenizer trained when --tokenizer is absent.", DefaultValueFactory = _ => 8192 };
        var preset = new Option<string>("--preset") { Description = $"Model shape: {string.Join(", ", MLNetFinetune.ModelFiles.ModelConfig.PresetNames)}.", DefaultValueFactory = _ => "pythia-14m" };
        var layers = new Option<int>("--layers") { Description = "Override the preset's number of layers." };
        var hidden = new Option<int>("--hidden-size") { Description = "Override the preset's width (the MLP keeps the preset's ratio)." };
        var heads = new Option<int>("--heads") { Description = "Override the preset's attention heads." };
        var command = new Command("pretrain", "Pretrain a model from random weights on a corpus (a GPT-NeoX or Llama-family shape: --preset).") { corpus, shards, tokenizer, vocab, preset, layers, hidden, heads };
        foreach (var o in common.All.Concat(text.All)) command.Options.Add(o);
        command.SetAction(result => common.Ranked(result, output, (group, output) =>
        {
            var ml = new MLContext(seed: result.GetValue(common.Seed));
            if ((result.GetValue(corpus) == null) == (result.GetValue(shards) == null)) throw new ArgumentException("Give the training data as --corpus (text) or --shards (token shards), one of them.");
            if (result.GetValue(shards) != null && result.GetValue(tokenizer) == null) throw new ArgumentException("--shards needs --tokenizer: the tokenizer the shards were written with.");
            using var tokenShards = result.GetValue(shards) is { } folder ? ml.Data.LoadTokenShards(folder, result.GetValue(common.Block)) : null;
            IDataView data = (IDataView?)tokenShards ?? ml.Data.LoadCorpus(text.For(result, result.GetValue(corpus)!));
            var tok = result.GetValue(tokenizer) is { } dir ? TextTokenizer.Load(dir) : BpeTrainer.Train(data, new BpeTrainerOptions { VocabSize = result.GetValue(vocab) });
            var shape = new PretrainingOptions { Tokenizer = tok, Preset = result.GetValue(preset)!, OutputDirectory = "" }.ResolveConfig();
            if (result.GetValue(layers) > 0) shape = shape with { NumHiddenLayers = result.GetValue(layers) };
            if (result.GetValue(heads) > 0) shape = shape with { NumAttentionHeads = result.GetValue(heads) };
            if (result.GetValue(hidden) is > 0 and var width) shape = shape with { HiddenSize = width, IntermediateSize = (int)((long)shape.IntermediateSize * width / shape.HiddenSize) };
            common.SayDevice(result, output);
            using var model = ProgressDisplay.Train(output, "pretrain", progress => ml.CausalLM().Trainers.Pretrain(common.Apply(new PretrainingOptions
            {
                Tokenizer = tok, Config = shape.Validated("the --layers/--hidden-size/--heads shape"), OutputDirectory = result.GetValue(common.Out)!,
            }, result, progress, group)).Fit(data));
            if (group?.Rank is null or 0) common.Report(result, output, "Pretraining loss", model.Training);
            return 0;
        }));
        return command;
    }

    public static Command Finetune(TextWriter output)
    {
        var common = new Common();
        var pairs = new Option<string>("--pairs") { Description = "Instruction data (.jsonl or .csv; question/answer, Alpaca or prompt/completion).", Required = true };
        var baseModel = new Option<string>("--base") { Description = "The base model directory.", Required = true };
        var lora = new Option<int>("--lora-rank") { Description = "Train LoRA adapters of this rank (0: full finetuning).", DefaultValueFactory = _ => 0 };
        var wholeText = new Option<bool>("--whole-text-loss") { Description = "Train on the prompt too (the course's lab), not only the answer." };
        var template = TemplateOption("The prompt format to train (recorded in the model folder). Default: the pairs' layout's (qa for question/answer).");
        var fieldMap = FieldMapOption.Create();
        var chatTemplate = new Option<string?>("--chat-template") { Description = "For conversations (messages): a Jinja chat template file to render them with. Default: the base model's." };
        var command = new Command("finetune", "Instruction-finetune a base model on prompt/response pairs or conversations (full or LoRA).")
        {
            pairs, baseModel, lora, wholeText, template, chatTemplate, fieldMap,
        };
        foreach (var o in common.All) command.Options.Add(o);
        command.SetAction(result => common.Ranked(result, output, (group, output) =>
        {
            var ml = new MLContext(seed: result.GetValue(common.Seed));
            string basePath = result.GetValue(baseModel)!;
            var frame = ml.Data.LoadInstructionData(result.GetValue(pairs)!, FieldMapOption.Options(result, fieldMap));
            bool conversations = InstructionData.DetectLayout(frame.Columns.Select(c => c.Name)) == InstructionLayout.Conversation;
            PromptFormat? format = null;
            ChatTemplate? chat = null;
            IReadOnlyDictionary<string, object?>? chatTokens = null;
            IDataView data;
            if (conversations)
            {
                // Conversations are rendered with the chat template, one pair per assistant turn, and the folder keeps it.
                chat = result.GetValue(chatTemplate) is { } file ? ChatTemplate.Parse(File.ReadAllText(file), file) : ChatTemplate.Load(basePath)
                    ?? throw new ArgumentException($"The data holds conversations (messages) but base model '{basePath}' has no chat template; give one with --chat-template FILE.");
                chatTokens = ChatTemplate.SpecialTokens(basePath);
                data = ConversationPairs.Expand(frame, chat, chatTokens);
            }
            else (data, format) = Render(ml, frame, result.GetValue(template), recorded: null);
            int rank = result.GetValue(lora);
            common.SayDevice(result, output);
            using var model = ProgressDisplay.Train(output, "finetune", progress => ml.CausalLM().Trainers.InstructionTune(common.Apply(new InstructionTuningOptions
            {
                BaseModel = basePath, OutputDirectory = result.GetValue(common.Out)!, MaskPrompt = !result.GetValue(wholeText), Format = format,
                ChatTemplate = chat, ChatTemplateTokens = chatTokens, Lora = rank > 0 ? new LoraOptions { Rank = rank, Alpha = 2 * rank } : null,
            }, result, progress, group)).Fit(data));
            output.WriteLine(format != null ? $"prompt format: {format.Name} (recorded in the model folder)" : $"chat template: {chat!.Origin} (recorded in the model folder)");
            if (group?.Rank is null or 0) common.Report(result, output, "Finetuning loss", model.Training);
            return 0;
        }));
        return command;
    }

    public static Command Evaluate(TextWriter output)
    {
        var pairs = new Option<string>("--pairs") { Description = "Instruction data to answer (.jsonl or .csv).", Required = true };
        var model = new Option<string>("--model") { Description = "The model to evaluate: a model directory (TorchSharp: answers and loss) or an exported folder (ONNX Runtime, e.g. an int4 export: answers).", Required = true };
        var against = new Option<string?>("--base") { Description = "A second model directory or exported folder (e.g. the base, or the float32 model against its int4 export) to compare with." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest answer.", DefaultValueFactory = _ => 100 };
        var report = new Option<string?>("--report") { Description = "Write the answers and metrics (or, with --base, the comparison) as Markdown here, and CSV beside it." };
        var fieldMap = FieldMapOption.Create();
        var cloze = new Option<bool>("--cloze") { Description = "Instead, continue each pair's 'cloze' field (a sentence cut before its answer) and count continuations that name the answer." };
        var template = TemplateOption("The prompt format for a model folder that records none (a base model). Default: the pairs' layout's.");
        var batch = new Option<int>("--batch-size") { Description = "Prompts generated and scored together.", DefaultValueFactory = _ => new CausalLMScoringOptions().BatchSize };
        var command = new Command("evaluate", "Answer the pairs' prompts and score the answers (exact match, token F1, loss); optionally against a base model. " +
            "Prompts and responses are rendered in the format the model folder records.")
        {
            pairs, model, against, maxNew, report, cloze, template, batch, fieldMap,
        };
        command.SetAction(result =>
        {
            var ml = new MLContext(seed: 0);
            if (result.GetValue(cloze))
            {
                if (result.GetValue(report) != null) throw new ArgumentException("--report writes answers to pairs; --cloze has none to write (drop one of them).");
                var items = ClozeItems(ml, result.GetValue(pairs)!, FieldMapOption.Options(result, fieldMap, ["cloze"]));
                foreach (var dir in new[] { result.GetValue(model)!, result.GetValue(against) }.OfType<string>())
                {
                    using var lm = EvaluatedModel.Load(dir, new CausalLMScoringOptions { BatchSize = result.GetValue(batch) });
                    output.WriteLine($"{dir}: cloze recall {ClozeEvaluator.Evaluate(items, prompts => lm.Generate(prompts, new GenerationOptions { MaxNewTokens = result.GetValue(maxNew) }))}");
                }
                return 0;
            }
            var scoring = new CausalLMScoringOptions
            {
                TextColumnName = null, PromptColumnName = "Prompt", ResponseColumnName = "Response",
                Generation = new GenerationOptions { MaxNewTokens = result.GetValue(maxNew) }, BatchSize = result.GetValue(batch),
            };
            using var tuned = EvaluatedModel.Load(result.GetValue(model)!, scoring);
            IDataView data;
            string question, label;
            if (tuned.Format == null && ChatTemplate.Load(result.GetValue(model)!) is { } chat)
            {
                // A model finetuned on conversations is asked in its chat template, as chat asks it.
                var frame = ml.Data.LoadInstructionData(result.GetValue(pairs)!, FieldMapOption.Options(result, fieldMap));
                var layout = InstructionData.DetectLayout(frame.Columns.Select(c => c.Name))!.Value;
                data = ConversationPairs.ForEvaluation(frame, layout, chat, ChatTemplate.SpecialTokens(result.GetValue(model)!));
                (question, label) = ("question", "answer");
                output.WriteLine($"chat template: {chat.Origin} (recorded in the model folder)");
            }
            else
            {
                (data, var layout, var format) = Render(ml, result.GetValue(pairs)!, FieldMapOption.Options(result, fieldMap), result.GetValue(template), tuned.Format);
                output.WriteLine($"prompt format: {format.Name}{(tuned.Format != null ? " (recorded in the model folder)" : "")}");
                if (tuned.Format != null && result.GetValue(template) is { } ignored)
                    output.WriteLine($"note: --template {ignored} is not used: the model folder records the format it was trained with");
                (question, label) = (InstructionData.FieldsOf(layout)[0], InstructionData.FieldsOf(layout)[^1]);
            }
            var scored = tuned.Scorer.Transform(data);
            // One report or comparison reads each lazy view once: generation is the costly part.
            string? path = result.GetValue(report);
            if (result.GetValue(against) is not { } baseDir)
            {
                var single = ModelReport.Create(scored, question, label);
                output.WriteLine($"{result.GetValue(model)}: {single.Metrics}");
                if (path == null) return 0;
                single.WriteMarkdown(path);
                single.WriteCsv(Path.ChangeExtension(path, ".csv"));
            }
            else
            {
                using var baseline = EvaluatedModel.Load(baseDir, scoring);
                var comparison = ModelComparison.Compare(baseline.Scorer.Transform(data), scored, question, label);
                output.WriteLine($"{result.GetValue(model)}: {comparison.Tuned}");
                output.WriteLine($"{baseDir}: {comparison.Base}");
                if (path == null) return 0;
                comparison.WriteMarkdown(path);
                comparison.WriteCsv(Path.ChangeExtension(path, ".csv"));
            }
            output.WriteLine($"report written to {path} (and {Path.ChangeExtension(path, ".csv")})");
            return 0;
        });
        return command;
    }

    /// <summary>The distinct cloze prompts of a pairs file (its <c>cloze</c> field) with their answers.</summary>
    internal static IReadOnlyList<ClozeItem> ClozeItems(MLContext ml, string path, InstructionDataOptions options)
    {
        var frame = ml.Data.LoadInstructionData(path, options);
        string answer = InstructionData.FieldsOf(InstructionData.DetectLayout(frame.Columns.Select(c => c.Name))!.Value)[^1];
        return frame.Rows.Select(r => new ClozeItem((string)r["cloze"], (string)r[answer])).Distinct().ToArray();
    }

    static Option<string?> TemplateOption(string description) =>
        new("--template") { Description = $"{description} Built-in: {string.Join(", ", PromptTemplates.BuiltIn.Select(f => f.Name))}; or a JSON file with \"prompt\" and \"response\"." };

    // The pairs with Prompt and Response columns rendered in the format the model records, else the one asked for, else
    // the layout's built-in.
    static (IDataView Data, InstructionLayout Layout, PromptFormat Format) Render(MLContext ml, string path, InstructionDataOptions options, string? template, PromptFormat? recorded)
    {
        var pairs = ml.Data.LoadInstructionData(path, options);
        var (data, format) = Render(ml, pairs, template, recorded);
        return (data, InstructionData.DetectLayout(pairs.Columns.Select(c => c.Name))!.Value, format);
    }

    static (IDataView Data, PromptFormat Format) Render(MLContext ml, DataFrame pairs, string? template, PromptFormat? recorded)
    {
        var layout = InstructionData.DetectLayout(pairs.Columns.Select(c => c.Name))!.Value;
        var format = recorded ?? (template != null ? PromptFormats.Resolve(template) : InstructionData.TemplateFor(layout));
        var render = ml.Transforms.Text.ApplyPromptFormat(format);
        return (render.Fit(pairs).Transform(pairs), format);
    }

    // What evaluate scores with: a model directory through TorchSharp (answers and their loss), or an exported folder
    // (model.onnx) through ONNX Runtime (answers), so an int4 export can be scored against its float32 model.
    sealed record EvaluatedModel(ITransformer Scorer, PromptFormat? Format, Func<IReadOnlyList<string>, GenerationOptions, IReadOnlyList<string>> Generate) : IDisposable
    {
        public static EvaluatedModel Load(string dir, CausalLMScoringOptions scoring)
        {
            if (!File.Exists(Path.Combine(dir, OnnxExporter.ModelFile)))
            {
                var lm = CausalLMTransformer.Load(dir, scoring);
                return new(lm, lm.Format, lm.Generate);
            }
            var ort = new OnnxGenerationTransformer(new OnnxGenerationOptions
            {
                ModelFolder = dir, PromptColumnName = scoring.PromptColumnName ?? "Prompt", OutputColumnName = scoring.GeneratedColumnName,
                Generation = scoring.Generation, BatchSize = scoring.BatchSize,
            });
            return new(ort, ort.Model.Format, (prompts, options) => DecodeLoop.Generate(ort.Model, prompts, options, scoring.BatchSize));
        }

        public void Dispose() => ((IDisposable)Scorer).Dispose(); // both transformers hold their model
    }
}
