using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Course;

/// <summary>Options of <see cref="FactsLesson"/>: where the data, the base model and the output are, and how to finetune.</summary>
public sealed class FactsLessonOptions
{
    /// <summary>A folder with <c>train.jsonl</c> and <c>heldout.jsonl</c> (the bundled <c>examples/data/facts</c>). Required.</summary>
    public required string Data { get; init; }

    /// <summary>The base model directory (the bundled <c>models/facts-base</c>). Required.</summary>
    public required string BaseModel { get; init; }

    /// <summary>Output folder: <c>finetune/</c> (model, metrics.csv) and <c>onnx/</c>. Required.</summary>
    public required string Output { get; init; }

    /// <summary>Passes over the finetuning pairs, when <see cref="MaxSteps"/> is 0. Default 2.</summary>
    public int Epochs { get; init; } = 2;

    /// <summary>
    /// Optimizer steps instead of epochs (0: use <see cref="Epochs"/>). Default 520 (about 1.7 epochs of 16 pairs): as
    /// accurate as 2 epochs on the held-out entities and keeps the lesson under 3 minutes on 2 cores.
    /// </summary>
    public int MaxSteps { get; init; } = 520;

    /// <summary>Peak learning rate. Default 5e-4.</summary>
    public double LearningRate { get; init; } = 5e-4;

    /// <summary>Pairs per step. Default 16.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Prompts generated and scored together. Default 32.</summary>
    public int EvalBatchSize { get; init; } = 32;

    /// <summary>LoRA rank (0, default: full finetuning).</summary>
    public int LoraRank { get; init; }

    /// <summary>Score at most this many held-out pairs of each kind (0: all).</summary>
    public int MaxHeldOutRows { get; init; }

    /// <summary>libtorch threads (0: all cores).</summary>
    public int Threads { get; init; }

    /// <summary>Where libtorch trains and scores: <c>auto</c> (default: CUDA when libtorch sees a GPU, else CPU), <c>cpu</c>, <c>cuda</c>, <c>cuda:N</c>.
    /// ONNX Runtime picks its provider the same way (<c>auto</c>).</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Seed of weights order, data order and sampling. Default 0.</summary>
    public int Seed { get; init; }

    /// <summary>
    /// Also export the finetuned model with quantized weights (<see cref="WeightQuantization.Int4"/>, …) and score that
    /// folder with ONNX Runtime on the same held-out pairs, beside the float32 model. Null (default): only float32.
    /// </summary>
    public WeightQuantization? Quantization { get; init; }
}

/// <summary>How a lesson shows long work: a progress display for training, timing for scoring, a loss plot.</summary>
public interface ILessonDisplay
{
    /// <summary>Runs a training, handing it a progress sink.</summary>
    T Train<T>(string title, Func<IProgress<TrainingProgress>, T> train);

    /// <summary>Runs some work and says how long it took.</summary>
    T Timed<T>(string title, Func<T> work);

    /// <summary>Draws a run directory's loss curve; returns the picture's path, or null.</summary>
    string? PlotLoss(string runDirectory, string title);
}

/// <summary>
/// The lesson's numbers: exact match before and after on held-out entities, cloze recall, and the time taken; with a
/// quantized export, its exact match too.
/// </summary>
public sealed record FactsLessonResult(GenerationMetrics BaseExtraction, GenerationMetrics TunedExtraction, GenerationMetrics BaseRecall,
    GenerationMetrics TunedRecall, Rate BaseCloze, Rate TunedCloze, double Seconds)
{
    /// <summary>The quantization of the export scored (<c>int4</c>, <c>int8</c>), or null.</summary>
    public string? Quantization { get; init; }

    /// <summary>The quantized export's extraction exact match (ONNX Runtime), or null.</summary>
    public GenerationMetrics? QuantizedExtraction { get; init; }

    /// <summary>The quantized export's recall exact match (ONNX Runtime), or null.</summary>
    public GenerationMetrics? QuantizedRecall { get; init; }

    /// <summary>The one-line JSON summary the quickstart ends with.</summary>
    public string ToJson() => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["base_extraction_em"] = Round(BaseExtraction.ExactMatch.Value),
        ["finetuned_extraction_em"] = Round(TunedExtraction.ExactMatch.Value),
        ["base_recall_em"] = Round(BaseRecall.ExactMatch.Value),
        ["finetuned_recall_em"] = Round(TunedRecall.ExactMatch.Value),
        ["base_cloze_recall"] = Round(BaseCloze.Value),
        ["finetuned_cloze_recall"] = Round(TunedCloze.Value),
        ["heldout_rows"] = BaseExtraction.Count + BaseRecall.Count,
        ["seconds"] = Math.Round(Seconds, 1),
    }.Concat(Quantization == null ? [] : new Dictionary<string, object>
    {
        [$"{Quantization}_extraction_em"] = Round(QuantizedExtraction!.ExactMatch.Value),
        [$"{Quantization}_recall_em"] = Round(QuantizedRecall!.ExactMatch.Value),
    }).ToDictionary());

    static double Round(double value) => Math.Round(value, 4);
}

/// <summary>
/// The course's lesson on the bundled facts: a base model pretrained on prose about countries and elements is scored on
/// entities the finetuning never sees, finetuned on question/answer pairs through the ML.NET pipeline (prompt template →
/// instruction tuning), scored again, exported to ONNX and asked a few questions with ONNX Runtime. The last line
/// written is one JSON object with the before/after numbers.
/// </summary>
public static class FactsLesson
{
    static readonly AnswerNormalization Normalization = new() { IgnoreCase = true, IgnorePunctuation = true };

    /// <summary>Runs the lesson, writing its steps and tables to <paramref name="output"/>.</summary>
    public static FactsLessonResult Run(FactsLessonOptions s, TextWriter output, ILessonDisplay? display = null)
    {
        display ??= new LessonLines(output);
        var clock = Stopwatch.StartNew();
        var ml = new MLContext(seed: s.Seed);
        if (s.Threads > 0) global::TorchSharp.torch.set_num_threads(s.Threads);

        // 1. The pairs, in DataFrames: extraction (the passage states the answer) and recall (only pretraining knew it).
        FactPairs.Heading(output, "1. Question/answer pairs about the bundled facts");
        var (train, heldOut) = FactPairs.Load(ml, s.Data);
        var extraction = FactPairs.OfKind(heldOut, "extraction", s.MaxHeldOutRows);
        var recall = FactPairs.OfKind(heldOut, "recall", s.MaxHeldOutRows);
        if (extraction.Rows.Count == 0 || recall.Rows.Count == 0)
            throw new InvalidDataException($"{Path.Combine(s.Data, "heldout.jsonl")}: needs pairs of both kinds (kind \"extraction\" and \"recall\"); it has {extraction.Rows.Count} and {recall.Rows.Count}");
        var trainRecall = FactPairs.OfKind(train, "recall");
        output.WriteLine($"finetuning: {train.Rows.Count:N0} pairs (recall about {Distinct(trainRecall, "entity")} entities, extraction about " +
            $"{Distinct(train, "entity") - Distinct(trainRecall, "entity"):N0} made-up ones); evaluation: {extraction.Rows.Count + recall.Rows.Count:N0} pairs " +
            $"about {Distinct(recall, "entity")} held-out entities the finetuning never sees");
        output.WriteLine($"extraction (behaviour): {Quote(extraction, 0, "question")} → {Quote(extraction, 0, "answer")}");
        output.WriteLine($"recall (knowledge):     {Quote(recall, 0, "question")} → {Quote(recall, 0, "answer")}");

        // The answer follows "### Answer:" after a space, not on a new line (the qa-inline format): byte-level BPE gives
        // " Lima" and "Lima" different ids, and the corpus states every fact mid-sentence (" Lima"). On a new line the
        // finetuned model would have to spell each name with tokens it never stored the fact under. The format is recorded
        // in the model folder, so evaluate, chat and the ONNX folder prompt the model the same way.
        var format = PromptTemplates.QuestionAnswerInline;
        var render = ml.Transforms.Text.ApplyPromptFormat(format);
        var scoring = new CausalLMScoringOptions
        {
            TextColumnName = null, PromptColumnName = "Prompt", ResponseColumnName = "Response",
            Generation = new GenerationOptions { MaxNewTokens = 12 }, BatchSize = s.EvalBatchSize,
        };
        var cloze8 = new GenerationOptions { MaxNewTokens = 8 };

        // 2. The base model: it stored facts (cloze) but was never taught to answer questions.
        FactPairs.Heading(output, $"2. Base model ({s.BaseModel})");
        output.WriteLine($"device: {TorchRuntime.ChooseDevice(s.Device).Description}");
        using var baseline = CausalLMTransformer.Load(s.BaseModel, scoring, s.Device);
        var cloze = recall.Rows.Select(r => new ClozeItem((string)r["cloze"], (string)r["answer"])).ToArray();
        var baseCloze = display.Timed("cloze prompts", () => ClozeEvaluator.Evaluate(cloze, prompts => baseline.Generate(prompts, cloze8)));
        output.WriteLine($"cloze recall (\"{cloze[0].Prompt} …\"): {baseCloze}");
        var baseExtraction = display.Timed("extraction pairs", () => Score(baseline, render, extraction));
        var baseRecall = display.Timed("recall pairs", () => Score(baseline, render, recall));
        output.WriteLine($"extraction exact match: {baseExtraction.Metrics.ExactMatch}");
        output.WriteLine($"recall exact match:     {baseRecall.Metrics.ExactMatch}");

        // 3. Instruction finetuning through the ML.NET pipeline: prompt template → finetuning estimator.
        FactPairs.Heading(output, "3. Instruction finetuning");
        string runDirectory = Path.Combine(s.Output, "finetune");
        if (Directory.Exists(runDirectory)) Directory.Delete(runDirectory, recursive: true);
        using var tuned = display.Train("finetune", progress =>
        {
            var pipeline = render.Append(ml.CausalLM().Trainers.InstructionTune(new InstructionTuningOptions
            {
                BaseModel = s.BaseModel, OutputDirectory = runDirectory, BlockSize = 128, MicroBatchSize = s.BatchSize,
                Epochs = s.MaxSteps > 0 ? 0 : s.Epochs, MaxSteps = s.MaxSteps, LearningRate = s.LearningRate,
                WarmupSteps = 10, EvalFraction = 0.05, EvalInterval = 100, GroupByLength = true, LogInterval = 10, Threads = s.Threads, Seed = s.Seed, Device = s.Device,
                Generation = scoring.Generation, Progress = progress, Format = format,
                Lora = s.LoraRank > 0 ? new LoraOptions { Rank = s.LoraRank, Alpha = 2 * s.LoraRank } : null,
            }));
            return pipeline.Fit(train).LastTransformer.WithScoring(scoring);
        });
        output.WriteLine($"model: {Path.Combine(runDirectory, "model")}; loss curve: {display.PlotLoss(runDirectory, "Instruction finetuning on the bundled facts") ?? "(not drawn)"}");

        // 4. The finetuned model on the same held-out rows.
        FactPairs.Heading(output, "4. Base against finetuned, held-out entities");
        var tunedExtraction = display.Timed("extraction pairs", () => Score(tuned, render, extraction));
        var tunedRecall = display.Timed("recall pairs", () => Score(tuned, render, recall));
        var tunedCloze = display.Timed("cloze prompts", () => ClozeEvaluator.Evaluate(cloze, prompts => tuned.Generate(prompts, cloze8)));
        output.WriteLine("| held-out pairs | rows | base | finetuned |");
        output.WriteLine("| --- | --- | --- | --- |");
        output.WriteLine($"| extraction exact match | {extraction.Rows.Count} | {baseExtraction.Metrics.ExactMatch} | {tunedExtraction.Metrics.ExactMatch} |");
        output.WriteLine($"| recall exact match | {recall.Rows.Count} | {baseRecall.Metrics.ExactMatch} | {tunedRecall.Metrics.ExactMatch} |");
        output.WriteLine($"| cloze recall (prose prompt) | {cloze.Length} | {baseCloze} | {tunedCloze} |");
        output.WriteLine();
        output.WriteLine("| recall by attribute | base | finetuned |");
        output.WriteLine("| --- | --- | --- |");
        var attributes = ((StringDataFrameColumn)recall["attribute"]).ToList();
        var baseByAttribute = GenerationEvaluator.ExactMatchByGroup(baseRecall.Answers, attributes, Normalization);
        var tunedByAttribute = GenerationEvaluator.ExactMatchByGroup(tunedRecall.Answers, attributes, Normalization);
        for (int i = 0; i < baseByAttribute.Count; i++)
            output.WriteLine($"| {baseByAttribute[i].Group} | {baseByAttribute[i].ExactMatch} | {tunedByAttribute[i].ExactMatch} |");
        output.WriteLine();
        output.WriteLine("| question | expected | base | finetuned |");
        output.WriteLine("| --- | --- | --- | --- |");
        foreach (var (frame, a, b) in new[] { (extraction, baseExtraction, tunedExtraction), (recall, baseRecall, tunedRecall) })
            for (int i = 0, shown = Math.Min(4, a.Answers.Count); i < shown; i++)
            {
                int row = i * a.Answers.Count / shown;
                output.WriteLine($"| {Cell((string)frame["question"][row])} | {a.Answers[row].Expected} | {Mark(a.Answers[row])}{Cell(a.Answers[row].Generated)} | {Mark(b.Answers[row])}{Cell(b.Answers[row].Generated)} |");
            }

        // 5. ONNX: the finetuned model with a KV cache, answering with ONNX Runtime.
        FactPairs.Heading(output, "5. ONNX export and ONNX Runtime");
        string onnx = OnnxExporter.Export(Path.Combine(runDirectory, "model"), new OnnxExportOptions { OutputDirectory = Path.Combine(s.Output, "onnx") });
        using var runtime = OnnxCausalLM.Load(onnx, "auto", s.Threads);
        var questions = recall.Rows.Take(4).Select(r => (string)r["question"]).Append((string)extraction.Rows[0]["question"]).ToArray();
        var answers = runtime.Generate(questions.Select(q => runtime.Format!.Prompt.Format(("question", q))).ToArray(),
            new GenerationOptions { MaxNewTokens = 12 });
        output.WriteLine($"exported to {onnx}; ONNX Runtime ({runtime.Provider}) answers:");
        for (int i = 0; i < questions.Length; i++) output.WriteLine($"  {Cell(questions[i])} → {answers[i].Trim()}");

        // 6. The same model with quantized weights, scored on the same rows by ONNX Runtime.
        Scored? quantizedExtraction = null, quantizedRecall = null;
        if (s.Quantization is { } quantization)
        {
            FactPairs.Heading(output, $"6. {quantization} weights (ONNX Runtime) against float32");
            string folder = OnnxExporter.Export(Path.Combine(runDirectory, "model"), new OnnxExportOptions { OutputDirectory = Path.Combine(s.Output, $"onnx-{quantization}"), Quantization = quantization });
            output.WriteLine($"exported to {folder}: {OnnxExporter.SizeOf(folder) / 1e6:N1} MB against float32's {OnnxExporter.SizeOf(onnx) / 1e6:N1} MB");
            using var quantized = new OnnxGenerationTransformer(new OnnxGenerationOptions
            {
                ModelFolder = folder, Generation = scoring.Generation, BatchSize = s.EvalBatchSize, Threads = s.Threads, Provider = "auto",
            });
            quantizedExtraction = display.Timed("extraction pairs", () => Score(quantized, quantized.Options.OutputColumnName, render, extraction));
            quantizedRecall = display.Timed("recall pairs", () => Score(quantized, quantized.Options.OutputColumnName, render, recall));
            output.WriteLine($"| held-out pairs | rows | finetuned, float32 (TorchSharp) | finetuned, {quantization} (ONNX Runtime) |");
            output.WriteLine("| --- | --- | --- | --- |");
            output.WriteLine($"| extraction exact match | {extraction.Rows.Count} | {tunedExtraction.Metrics.ExactMatch} | {quantizedExtraction.Metrics.ExactMatch} |");
            output.WriteLine($"| recall exact match | {recall.Rows.Count} | {tunedRecall.Metrics.ExactMatch} | {quantizedRecall.Metrics.ExactMatch} |");
            int same = tunedExtraction.Answers.Concat(tunedRecall.Answers).Zip(quantizedExtraction.Answers.Concat(quantizedRecall.Answers)).Count(p => p.First.Generated == p.Second.Generated);
            output.WriteLine($"answers identical to float32's: {same} of {extraction.Rows.Count + recall.Rows.Count}");
        }

        var result = new FactsLessonResult(baseExtraction.Metrics, tunedExtraction.Metrics, baseRecall.Metrics, tunedRecall.Metrics,
            baseCloze, tunedCloze, clock.Elapsed.TotalSeconds)
        {
            Quantization = s.Quantization?.ToString(), QuantizedExtraction = quantizedExtraction?.Metrics, QuantizedRecall = quantizedRecall?.Metrics,
        };
        output.WriteLine();
        output.WriteLine(result.ToJson());
        return result;
    }

    sealed record Scored(GenerationMetrics Metrics, IReadOnlyList<ScoredAnswer> Answers);

    // Renders the rows with the template and lets the model answer them (one pass over the lazy view).
    static Scored Score<T>(CausalLMTransformer model, IEstimator<T> render, DataFrame rows) where T : class, ITransformer =>
        Score(model, model.Scoring.GeneratedColumnName, render, rows, model.Scoring.LossColumnName);

    // The same with any transformer that adds a generated column (an exported folder's answers have no loss).
    static Scored Score<T>(ITransformer model, string generatedColumn, IEstimator<T> render, DataFrame rows, string lossColumn = "Loss") where T : class, ITransformer
    {
        var scored = model.Transform(render.Fit(rows).Transform(rows));
        var answers = GenerationEvaluator.ReadAnswers(scored, "answer", generatedColumn, lossColumn);
        return new Scored(GenerationEvaluator.Score(answers, Normalization), answers);
    }

    static int Distinct(DataFrame frame, string column) => ((StringDataFrameColumn)frame[column]).Distinct().Count();

    static string Quote(DataFrame frame, int row, string column) => '"' + Cell((string)frame[column][row]) + '"';

    static string Mark(ScoredAnswer answer) => answer.IsExact(Normalization) ? "✓ " : "";

    static string Cell(string text)
    {
        string flat = text.ReplaceLineEndings(" ").Replace("|", "\\|").Trim();
        return flat.Length > 90 ? flat[..87] + "…" : flat;
    }
}
