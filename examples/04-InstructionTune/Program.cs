// Lessons 3, 5 and 6, "Instruction finetuning" / "Training" / "Evaluation": finetune the base model from
// 03-Pretrain on question/answer pairs, then compare base and finetuned answers side by side.
//
//   dotnet run --project examples/04-InstructionTune -c Release [-- --lora]
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;
using MLNetFinetune.Generation;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;

var ml = new MLContext(seed: 0);
string baseModel = ExamplePaths.Earlier("03-Pretrain", "model");
string output = ExamplePaths.Output("04-InstructionTune");
bool lora = args.Contains("--lora");

// 1. The pairs, rendered in the course's question/answer format: the prompt ends at "### Answer:", the response
// follows on a new line. The format is recorded in the model folder, so later steps prompt the model the same way.
ExamplePaths.Heading("1. Instruction data");
var pairs = ml.Data.LoadInstructionData(ExamplePaths.Data("mlnet_finetune_docs.jsonl"));
var format = PromptTemplates.QuestionAnswer;
IDataView data = ml.Transforms.Text.ApplyPromptFormat(format).Fit(pairs).Transform(pairs);
Console.WriteLine($"{pairs.Rows.Count} pairs");

// 2. Finetuning: the loss covers only the answers (the prompt is masked); full finetuning or LoRA adapters.
ExamplePaths.Heading($"2. Instruction finetuning ({(lora ? "LoRA" : "full")})");
var tune = ml.CausalLM().Trainers.InstructionTune(new InstructionTuningOptions
{
    BaseModel = baseModel, OutputDirectory = output, BlockSize = 192, MicroBatchSize = 8, MaxSteps = lora ? 400 : 250,
    LearningRate = lora ? 1e-2 : 2e-3, MinLearningRate = 2e-4, WarmupSteps = 10, EvalFraction = 0, LogInterval = 50,
    Threads = Environment.ProcessorCount, Device = "auto", Lora = lora ? new LoraOptions { Rank = 8 } : null, Format = format,
    Generation = new GenerationOptions { MaxNewTokens = 120 },
    Progress = new Progress<TrainingProgress>(p => Console.WriteLine(p)),
});
using var tuned = tune.Fit(data);

// 3. Base against finetuned on the same questions: the base continues text, the finetuned model answers.
ExamplePaths.Heading("3. Base against finetuned");
var sample = ml.Data.TakeRows(data, 6);
using var baseline = CausalLMTransformer.Load(baseModel, tuned.Scoring);
var comparison = ModelComparison.Compare(baseline.Transform(sample), tuned.Transform(sample), "question", "answer",
    normalization: new AnswerNormalization { IgnoreCase = true, IgnorePunctuation = true });
Console.WriteLine(comparison.ToMarkdown());
comparison.WriteMarkdown(Path.Combine(output, "comparison.md"));
comparison.WriteCsv(Path.Combine(output, "comparison.csv"));
Console.WriteLine($"model in {Path.Combine(output, "model")}; comparison in {Path.Combine(output, "comparison.md")}");
