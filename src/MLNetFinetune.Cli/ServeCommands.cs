using System.CommandLine;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;

namespace MLNetFinetune.Cli;

/// <summary><c>mlnet-finetune export</c> and <c>generate</c>: thin wrappers over <see cref="OnnxExporter"/> and <see cref="OnnxCausalLM"/>.</summary>
static class ServeCommands
{
    public static Command Export(TextWriter output)
    {
        var model = new Argument<string>("model") { Description = "A model directory (config.json, model.safetensors, tokenizer)." };
        var outDir = new Option<string?>("--out") { Description = "Output folder (default: <model>/onnx)." };
        var command = new Command("export", "Export a model directory to ONNX with a KV cache (model.onnx, genai_config.json, tokenizer).") { model, outDir };
        command.SetAction(result =>
        {
            string folder = OnnxExporter.Export(result.GetValue(model)!, new OnnxExportOptions { OutputDirectory = result.GetValue(outDir) });
            output.WriteLine($"exported to {folder}");
            return 0;
        });
        return command;
    }

    public static Command Generate(TextWriter output)
    {
        var folder = new Argument<string>("folder") { Description = "An exported folder (model.onnx, config.json, tokenizer)." };
        var prompt = new Option<string>("--prompt", "-p") { Description = "The prompt.", Required = true };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest continuation.", DefaultValueFactory = _ => 100 };
        var temperature = new Option<double>("--temperature") { Description = "0 is greedy.", DefaultValueFactory = _ => 0 };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: all)." };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling threshold.", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int>("--seed") { Description = "Sampling seed." };
        var stop = new Option<string[]>("--stop") { Description = "Stop sequences.", AllowMultipleArgumentsPerToken = true };
        var provider = new Option<string>("--provider") { Description = "auto, cpu or cuda.", DefaultValueFactory = _ => "auto" };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime CPU threads (0: one per core)." };
        var command = new Command("generate", "Continue a prompt with an exported model (ONNX Runtime), streaming the text.")
        {
            folder, prompt, maxNew, temperature, topK, topP, seed, stop, provider, threads,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            using var model = OnnxCausalLM.Load(result.GetValue(folder)!, result.GetValue(provider)!, result.GetValue(threads));
            var options = new GenerationOptions
            {
                MaxNewTokens = result.GetValue(maxNew), Temperature = result.GetValue(temperature), TopK = result.GetValue(topK),
                TopP = result.GetValue(topP), Seed = result.GetValue(seed), StopSequences = result.GetValue(stop) ?? [],
            };
            await foreach (string piece in model.GenerateStreaming(result.GetValue(prompt)!, options, cancellationToken)) output.Write(piece);
            output.WriteLine();
            return 0;
        });
        return command;
    }
}
