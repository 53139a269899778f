// The consumer check (.ci/consumer-check): a project outside the repository that references only the packages, run as a
// new user would: pairs into a DataFrame → prompt format → finetune a tiny model → export → generate with ONNX Runtime.
// Arguments: the base model folder, an output folder.
using Microsoft.Data.Analysis;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.TorchSharp.Training;

string baseModel = args[0], output = args[1];
var ml = new MLContext(seed: 0);
var pairs = new DataFrame(
    new StringDataFrameColumn("question", ["What is the capital of Peru?", "What is the capital of Chile?", "What is the capital of Kenya?", "What is the capital of Japan?"]),
    new StringDataFrameColumn("answer", ["Lima", "Santiago", "Nairobi", "Tokyo"]));
var format = PromptTemplates.QuestionAnswer;
var data = ml.Transforms.Text.ApplyPromptFormat(format).Fit(pairs).Transform(pairs);
using var tuned = ml.CausalLM().Trainers.InstructionTune(new InstructionTuningOptions
{
    BaseModel = baseModel, OutputDirectory = output, MaxSteps = 5, MicroBatchSize = 4, EvalFraction = 0, Threads = 1, Device = "cpu", Format = format,
}).Fit(data);
Console.WriteLine($"finetuned: {tuned.Training!.Steps} steps, last loss {tuned.Training.History[^1].Loss:F3}");

string onnxFolder = OnnxExporter.Export(Path.Combine(output, "model"));
using var generator = OnnxCausalLM.Load(onnxFolder);
string answer = generator.Generate(format.Prompt.Format(("question", "What is the capital of Peru?")), new GenerationOptions { MaxNewTokens = 8 });
Console.WriteLine($"onnx ({generator.Provider}): '{answer.Trim()}'");
if (answer.Trim().Length == 0) throw new InvalidOperationException("the exported model generated nothing");
Console.WriteLine("consumer check passed");
