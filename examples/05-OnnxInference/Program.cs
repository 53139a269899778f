// Serving: export the finetuned model of 04-InstructionTune to ONNX (with its KV cache) and answer questions with
// ONNX Runtime — no libtorch from here on.
//
//   dotnet run --project examples/05-OnnxInference -c Release
using Microsoft.Extensions.AI;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;

string model = ExamplePaths.Earlier("04-InstructionTune", "model");

ExamplePaths.Heading("1. Export");
string folder = OnnxExporter.Export(model);
Console.WriteLine($"{folder}: {string.Join(", ", Directory.GetFiles(folder).Select(Path.GetFileName))}");

ExamplePaths.Heading("2. Generate with ONNX Runtime");
using var generator = OnnxCausalLM.Load(folder);
Console.WriteLine($"execution provider: {generator.Provider}");
var options = new GenerationOptions { MaxNewTokens = 120 };
string[] questions = ["What is MLNetFinetune?", "Do I need a GPU to try MLNetFinetune?", "What is instruction finetuning?"];
// The prompt format 04-InstructionTune trained with travels in the folder (prompt_format.json).
var prompt = (generator.Format ?? PromptTemplates.QuestionAnswer).Prompt;
Console.WriteLine($"prompt format: {generator.Format?.Name ?? "none recorded, using qa"}");
var answers = generator.Generate(questions.Select(q => prompt.Format(("question", q))).ToList(), options);
for (int i = 0; i < questions.Length; i++) Console.WriteLine($"Q: {questions[i]}\nA: {answers[i].Trim()}\n");

ExamplePaths.Heading("3. Streaming");
await foreach (string piece in generator.GenerateStreaming(prompt.Format(("question", "How do I load the Pile with MLNetFinetune?")), options))
    Console.Write(piece);
Console.WriteLine();

ExamplePaths.Heading("4. As an IChatClient (Microsoft.Extensions.AI)");
IChatClient chat = new OnnxChatClient(generator);
var response = await chat.GetResponseAsync([new ChatMessage(ChatRole.User, "Where are the examples of MLNetFinetune?")], new ChatOptions { MaxOutputTokens = 120 });
Console.WriteLine(response.Text.Trim());

ExamplePaths.Heading("5. Smaller and faster: int4 weights");
// Each linear layer's weights as 4-bit integers in blocks, run by ONNX Runtime's MatMulNBits: a fraction of the bytes
// to read per token. Same generator, same prompts; the answers stay close to float32's.
string int4 = OnnxExporter.Export(model, new OnnxExportOptions { OutputDirectory = folder + "-int4", Quantization = WeightQuantization.Int4 });
Console.WriteLine($"{int4}: {OnnxExporter.SizeOf(int4) / 1e6:N1} MB against float32's {OnnxExporter.SizeOf(folder) / 1e6:N1} MB");
using var quantized = OnnxCausalLM.Load(int4);
var int4Answers = quantized.Generate(questions.Select(q => prompt.Format(("question", q))).ToList(), options);
for (int i = 0; i < questions.Length; i++)
    Console.WriteLine($"Q: {questions[i]}\nA (int4): {int4Answers[i].Trim()}{(int4Answers[i] == answers[i] ? "  (as float32)" : "")}\n");
