using System.Diagnostics;
using System.Text.Json;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Finetuning throughput on the pythia-70m shape: full finetuning against LoRA (rank 8, alpha 16, all four target
/// projections), same batches of 8 × 128 tokens with the first half of each row masked out of the loss as prompt.
/// Options: --shape NAME (pythia-70m), --steps N (10), --device cpu|cuda, --threads N.
/// </summary>
static class FinetuneBenchmark
{
    public static Task<int> RunAsync(string[] args)
    {
        string shape = BenchmarkArgs.Value(args, "--shape") ?? "pythia-70m";
        int steps = BenchmarkArgs.Int(args, "--steps", 10);
        var (threads, device) = BenchmarkArgs.Torch(args);
        const int batch = 8, block = 128;
        var config = ModelConfig.Preset(shape);
        Console.WriteLine($"shape {shape}: {config.ParameterCount():N0} parameters, device {device.type}, {threads} threads");

        manual_seed(0);
        var ids = randint(0, config.VocabSize, [steps + 3, batch, block], dtype: int64, device: device);
        var labels = ids.clone();
        labels[.., .., ..(block / 2)] = tensor(-100L);

        double full = Measure(config, device, ids, labels, steps, lora: null, out _);
        Console.WriteLine($"full finetuning: {full:N0} tokens/s");
        double lora = Measure(config, device, ids, labels, steps, new LoraOptions(), out long trainable);
        Console.WriteLine($"LoRA r=8: {lora:N0} tokens/s, {trainable:N0} trainable parameters");
        Console.WriteLine(JsonSerializer.Serialize(new
        {
            benchmark = "finetune",
            shape,
            parameters = config.ParameterCount(),
            device = device.type.ToString().ToLowerInvariant(),
            threads,
            full_tokens_per_s = Math.Round(full, 1),
            lora_tokens_per_s = Math.Round(lora, 1),
            lora_speedup = Math.Round(lora / full, 3),
            lora_trainable_params = trainable,
        }));
        return Task.FromResult(0);
    }

    static double Measure(ModelConfig config, Device device, Tensor ids, Tensor labels, int steps, LoraOptions? lora, out long trainableCount)
    {
        manual_seed(1);
        using var model = new TransformerForCausalLM(config);
        model.to(device);
        if (lora != null) model.AttachLora(lora);
        var trainable = model.TrainableParameters().ToList();
        trainableCount = trainable.Sum(p => p.numel());
        var optimizer = optim.AdamW(trainable, 1e-4, 0.9, 0.95, 1e-8, 0.0);
        model.train();
        void Step(int i)
        {
            using var scope = NewDisposeScope();
            model.Loss(ids[i], labels[i]).backward();
            nn.utils.clip_grad_norm_(trainable, 1.0);
            optimizer.step();
            optimizer.zero_grad();
        }
        for (int i = 0; i < 3; i++) Step(i);
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        var clock = Stopwatch.StartNew();
        for (int i = 3; i < steps + 3; i++) Step(i);
        if (device.type == DeviceType.CUDA) cuda.synchronize();
        return (double)steps * ids.shape[1] * ids.shape[2] / clock.Elapsed.TotalSeconds;
    }
}
