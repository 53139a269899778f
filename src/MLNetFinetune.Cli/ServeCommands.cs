using System.CommandLine;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Server;
using TorchSharp = MLNetFinetune.TorchSharp;

namespace MLNetFinetune.Cli;

/// <summary><c>mlnet-finetune export</c>, <c>generate</c> and <c>serve</c>: thin wrappers over <see cref="OnnxExporter"/>, <see cref="OnnxCausalLM"/>, the TorchSharp model and <see cref="OpenAIServer"/>.</summary>
static class ServeCommands
{
    public static Command Export(TextWriter output)
    {
        var model = new Argument<string>("model") { Description = "A model directory (config.json, model.safetensors, tokenizer)." };
        var outDir = new Option<string?>("--out") { Description = "Output folder (default: <model>/onnx)." };
        var defaults = WeightQuantization.Int4;
        var quantize = new Option<string>("--quantize") { Description = "Weight-only quantization of the linear layers, the head and the embedding (MatMulNBits): int4, int8 or none.", DefaultValueFactory = _ => "none" };
        quantize.AcceptOnlyFromAmong("none", "int4", "int8");
        var blockSize = new Option<int>("--block-size") { Description = "Quantized weights per scale and zero point (a power of two ≥ 16).", DefaultValueFactory = _ => defaults.BlockSize };
        var accuracy = new Option<int>("--accuracy-level") { Description = "MatMulNBits' compute precision on CPU: 4 int8 (fast), 1 float32, 0 the provider's choice.", DefaultValueFactory = _ => defaults.AccuracyLevel };
        var float16 = new Option<bool>("--float16") { Description = "Float16 weights, activations and KV cache (for GPUs); logits stay float32." };
        var calibration = new Option<string?>("--calibration") { Description = "With --quantize: text (.txt/.jsonl[.gz|.zst], file, folder or glob) whose activations choose each layer's input scaling (AWQ's search) instead of plain rounding." };
        var text = new CorpusTextOptions("The JSON field --calibration reads.");
        var calibrationTokens = new Option<int>("--calibration-tokens") { Description = "Tokens of --calibration text to run.", DefaultValueFactory = _ => 4096 };
        var command = new Command("export", "Export a model directory to ONNX with a KV cache (model.onnx, genai_config.json, tokenizer); optionally int4/int8 weights.")
        {
            model, outDir, quantize, blockSize, accuracy, float16, calibration, calibrationTokens,
        };
        foreach (var o in text.All) command.Options.Add(o);
        command.Validators.Add(result =>
        {
            if (result.GetValue(calibration) != null && result.GetValue(quantize) is null or "none") result.AddError("--calibration chooses how weights are quantized; add --quantize int4 or int8.");
        });
        command.SetAction(result =>
        {
            ActivationStatistics? statistics = null;
            if (result.GetValue(calibration) is { } calibrationPath)
            {
                var corpus = new MLContext(seed: 0).Data.LoadCorpus(text.For(result, calibrationPath));
                statistics = ActivationCalibration.Collect(result.GetValue(model)!, corpus.GetColumn<ReadOnlyMemory<char>>(corpus.Schema["Text"]).Select(t => t.ToString()), result.GetValue(calibrationTokens));
                output.WriteLine($"calibration: {statistics.Tokens:N0} tokens of {calibrationPath}, {statistics.Inputs.Count} linear layers");
            }
            var quantization = WeightQuantization.Parse(result.GetValue(quantize)) is { } q
                ? q with { BlockSize = result.GetValue(blockSize), AccuracyLevel = result.GetValue(accuracy), Calibration = statistics }
                : null;
            string folder = OnnxExporter.Export(result.GetValue(model)!, new OnnxExportOptions
            {
                OutputDirectory = result.GetValue(outDir), Quantization = quantization, Float16 = result.GetValue(float16),
            });
            output.WriteLine($"exported to {folder} ({(quantization != null ? quantization + " weights, " : "")}{OnnxExporter.SizeOf(folder) / 1e6:N1} MB)");
            return 0;
        });
        return command;
    }

    public static Command Generate(TextWriter output)
    {
        var folder = new Argument<string>("folder") { Description = "An exported folder (model.onnx: ONNX Runtime) or a model directory (config.json and safetensors: TorchSharp)." };
        var prompt = new Option<string?>("--prompt", "-p") { Description = "The prompt." };
        var ids = new Option<string?>("--ids") { Description = "The prompt as token ids, comma-separated (e.g. 1,2,3), instead of --prompt." };
        var printIds = new Option<bool>("--print-ids") { Description = "Print the prompt's and the generated ids, comma-separated on one line, instead of the text." };
        var ignoreEos = new Option<bool>("--ignore-eos") { Description = "Keep generating past end of text (always --max-new-tokens)." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest continuation.", DefaultValueFactory = _ => 100 };
        var temperature = new Option<double>("--temperature") { Description = "0 is greedy.", DefaultValueFactory = _ => 0 };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: all)." };
        var topP = new Option<double>("--top-p") { Description = "Nucleus sampling threshold.", DefaultValueFactory = _ => 1.0 };
        var seed = new Option<int>("--seed") { Description = "Sampling seed." };
        var stop = new Option<string[]>("--stop") { Description = "Stop sequences.", AllowMultipleArgumentsPerToken = true };
        var provider = new Option<string>("--provider") { Description = "An exported folder: auto, cpu or cuda.", DefaultValueFactory = _ => "auto" };
        var device = new Option<string>("--device") { Description = "A model directory: auto, cpu, cuda or cuda:N.", DefaultValueFactory = _ => "auto" };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0: one per core)." };
        var command = new Command("generate", "Continue a prompt, given as text or as token ids, with an exported model (ONNX Runtime) or a model directory (TorchSharp).")
        {
            folder, prompt, ids, printIds, ignoreEos, maxNew, temperature, topK, topP, seed, stop, provider, device, threads,
        };
        command.Validators.Add(result =>
        {
            if ((result.GetValue(prompt) == null) == (result.GetValue(ids) == null)) result.AddError("Give the prompt as --prompt or as --ids (one of them).");
        });
        command.SetAction(async (result, cancellationToken) =>
        {
            string path = result.GetValue(folder)!;
            var options = new GenerationOptions
            {
                MaxNewTokens = result.GetValue(maxNew), Temperature = result.GetValue(temperature), TopK = result.GetValue(topK),
                TopP = result.GetValue(topP), Seed = result.GetValue(seed), StopSequences = result.GetValue(stop) ?? [], IgnoreEos = result.GetValue(ignoreEos),
            };
            using var model = LoadDecoder(path, result.GetValue(provider)!, result.GetValue(device)!, result.GetValue(threads));
            IDecoderModel decoder = model.Decoder;
            long[]? promptIds = result.GetValue(ids) is { } list ? ParseIds(list) : null;
            if (promptIds == null && !result.GetValue(printIds))
            {
                await foreach (string piece in DecodeLoop.Stream(decoder, result.GetValue(prompt)!, options, cancellationToken)) output.Write(piece);
                output.WriteLine();
                return 0;
            }
            promptIds ??= decoder.Tokenizer.EncodeSequence(result.GetValue(prompt)!).Select(i => (long)i).ToArray();
            long[] generated = DecodeLoop.GenerateIds(decoder, [promptIds], options, cancellationToken)[0];
            output.WriteLine(result.GetValue(printIds) ? string.Join(",", promptIds.Concat(generated)) : decoder.Tokenizer.Decode(generated.Select(t => (int)t)));
            return 0;
        });
        return command;
    }

    public static Command Serve(TextWriter output)
    {
        var folder = new Argument<string>("folder") { Description = "An exported folder (model.onnx, tokenizer; its chat template or prompt format renders messages)." };
        var host = new Option<string>("--host") { Description = "Address to bind (0.0.0.0: every interface).", DefaultValueFactory = _ => "127.0.0.1" };
        var port = new Option<int>("--port") { Description = "Port (0: any free one).", DefaultValueFactory = _ => 8000 };
        var apiKeyEnv = new Option<string?>("--api-key-env") { Description = "Name of an environment variable holding the API key clients must send (default: no key)." };
        var modelName = new Option<string?>("--model-name") { Description = "The model's id in requests (default: the folder's name)." };
        var maxBatch = new Option<int>("--max-batch") { Description = "Most requests decoded together; more wait to join the batch.", DefaultValueFactory = _ => 32 };
        var maxConcurrent = new Option<int>("--max-concurrent") { Description = "Most requests in flight; more get 429.", DefaultValueFactory = _ => 128 };
        var provider = new Option<string>("--provider") { Description = "auto, cpu or cuda.", DefaultValueFactory = _ => "auto" };
        var threads = new Option<int>("--threads") { Description = "CPU threads (0: one per core)." };
        var command = new Command("serve", "Serve an exported model over the OpenAI API (chat completions, completions, models; streaming; continuous batching) until Ctrl+C.")
        {
            folder, host, port, apiKeyEnv, modelName, maxBatch, maxConcurrent, provider, threads,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            string? key = null;
            if (result.GetValue(apiKeyEnv) is { } name)
            {
                key = Environment.GetEnvironmentVariable(name);
                if (string.IsNullOrEmpty(key)) throw new ArgumentException($"--api-key-env names {name}, which is not set (or empty).");
            }
            await using var server = await OpenAIServer.StartAsync(new ServerOptions
            {
                Folder = result.GetValue(folder)!, Host = result.GetValue(host)!, Port = result.GetValue(port), ApiKey = key, ModelName = result.GetValue(modelName),
                MaxBatch = result.GetValue(maxBatch), MaxConcurrent = result.GetValue(maxConcurrent), Provider = result.GetValue(provider)!, Threads = result.GetValue(threads),
            }, cancellationToken);
            // The first line is the address alone, for scripts that wait for it; what is served follows.
            output.WriteLine($"listening on {server.Address.GetLeftPart(UriPartial.Authority)}");
            output.WriteLine($"serving '{server.ModelId}' on {server.Provider}");
            output.Flush();
            try
            {
                await server.WaitForShutdownAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                // Ctrl+C or SIGTERM reached the command line first; the server still stops gracefully below.
            }
            await server.StopAsync();
            output.WriteLine("stopped");
            return 0;
        });
        return command;
    }

    static long[] ParseIds(string list)
    {
        var parts = list.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        if (parts.Length == 0) throw new ArgumentException("--ids is empty; give token ids such as 1,2,3.");
        return parts.Select((p, i) => long.TryParse(p, out long id) && id >= 0 ? id
            : throw new ArgumentException($"--ids item {i + 1} ('{p}') is not a token id (a non-negative integer).")).ToArray();
    }

    // An exported folder runs in ONNX Runtime, a model directory in TorchSharp; both behind the shared decode loop.
    static LoadedDecoder LoadDecoder(string path, string provider, string device, int threads)
    {
        if (File.Exists(Path.Combine(path, OnnxExporter.ModelFile)))
        {
            var onnx = OnnxCausalLM.Load(path, provider, threads);
            return new LoadedDecoder(onnx, onnx);
        }
        if (!File.Exists(Path.Combine(path, ModelFiles.ModelDirectory.ConfigFile)))
            throw new FileNotFoundException($"'{path}' is neither an exported folder (it has no {OnnxExporter.ModelFile}) nor a model directory (it has no {ModelFiles.ModelDirectory.ConfigFile}).");
        TorchSharp.TorchRuntime.SetThreads(threads);
        var torch = TorchSharp.Training.CausalLMTransformer.Load(path, device: device);
        return new LoadedDecoder(torch.Runtime, torch);
    }

    sealed record LoadedDecoder(IDecoderModel Decoder, IDisposable Owner) : IDisposable
    {
        public void Dispose() => Owner.Dispose();
    }
}
