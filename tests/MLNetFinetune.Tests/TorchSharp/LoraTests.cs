using Microsoft.Data.Analysis;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

[Collection(TorchCollection.Name)]
public class LoraTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly MLContext _ml = new(seed: 0);

    public void Dispose() => _dir.Dispose();

    static ModelConfig Tiny => ModelConfig.Preset("tiny", 320);

    static Tensor Ids() => tensor(new long[] { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3 }, [1, 10]);

    internal static Dictionary<string, float[]> Snapshot(TransformerForCausalLM model) =>
        model.state_dict().ToDictionary(p => p.Key, p => p.Value.detach().cpu().data<float>().ToArray());

    [Fact]
    public void AdaptersTrainWhileBaseWeightsStayExactlyTheSame()
    {
        manual_seed(0);
        using var model = new TransformerForCausalLM(Tiny);
        var before = Snapshot(model);
        var lora = model.AttachLora(new LoraOptions { Rank = 4, Alpha = 8 });
        long expected = 2 * (4 * (64 + 192) + 4 * (64 + 64) + 4 * (64 + 256) + 4 * (256 + 64)); // 2 layers × four targets × r·(in + out)
        Assert.Equal(expected, lora.ParameterCount);
        Assert.Equal(lora.Parameters().Count(), model.TrainableParameters().Count());

        var rows = Enumerable.Range(0, 16).Select(i => new IdsRow { Ids = Enumerable.Range(0, 24).Select(t => (t * 7 + i) % 300).ToArray() }).ToList();
        var data = new TrainingExamples(_ml.Data.LoadFromEnumerable(rows), "Ids", null, 0, 0, 320);
        var options = new PretrainingOptions
        {
            Tokenizer = TextTokenizer.Gpt2(), OutputDirectory = Path.Combine(_dir.Path, "lora"), MaxSteps = 10, MicroBatchSize = 4, BlockSize = 24,
            LearningRate = 1e-2, EvalFraction = 0, Threads = 1, Device = "cpu", CheckpointInterval = 5, LogInterval = 1,
        };
        var result = CausalLMTrainer.Train(model, LoraTokenizer(), data, options);
        Assert.True(result.History[^1].Loss < result.History[0].Loss, string.Join(", ", result.History.Select(r => $"{r.Step}:{r.Loss:F4}:{r.GradientNorm:F4}")));
        foreach (var (name, values) in Snapshot(model)) Assert.Equal(before[name], values);
        Assert.Contains(lora.Parameters(), p => p.abs().sum().item<float>() > 0 && p.shape[1] == 4); // B moved off zero
        Assert.True(File.Exists(Path.Combine(result.LastCheckpoint, "adapter_model.safetensors")));
        Assert.False(File.Exists(Path.Combine(result.LastCheckpoint, "model.safetensors"))); // adapters only
    }

    [Fact]
    public void MergedWeightsEqualWPlusScaledBA()
    {
        manual_seed(1);
        using var model = new TransformerForCausalLM(Tiny);
        var lora = model.AttachLora(new LoraOptions { Rank = 2, Alpha = 6, Dropout = 0 });
        using (no_grad()) foreach (var p in lora.Parameters()) p.copy_(randn(p.shape) * 0.1);
        var (name, a, b) = lora.Pairs.Values.First(p => p.Name.EndsWith("query_key_value"));
        var w = model.state_dict()[name + ".weight"].detach().clone();
        var expected = (w.to(float64) + 3.0 * b.detach().to(float64).matmul(a.detach().to(float64))).to(float32).data<float>().ToArray();
        model.eval();
        using var _ = no_grad();
        var adapted = model.forward(Ids()).clone();

        model.MergeLora();
        Assert.Null(model.Lora);
        var merged = model.state_dict()[name + ".weight"].data<float>().ToArray();
        Assert.All(merged.Zip(expected), p => Assert.InRange(p.First - p.Second, -1e-6f, 1e-6f));
        Assert.True(allclose(adapted, model.forward(Ids()), rtol: 0, atol: 1e-5), "the merged model computes what the adapted one did");
    }

    [Fact]
    public void LlamaTargetsAllLinearSaveInPeftLayoutAndMergeExactly()
    {
        manual_seed(3);
        var config = ModelConfig.Preset("tiny-llama", 320);
        using var model = new TransformerForCausalLM(config);
        var lora = model.AttachLora(new LoraOptions { Rank = 2, Alpha = 4, Dropout = 0 }); // all-linear by default
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], lora.Options.TargetModules);
        // 2 layers × r·(in + out): q 64→64, k and v 64→32 (2 KV heads of 16), o 64→64, gate and up 64→128, down 128→64.
        Assert.Equal(2 * 2 * ((64 + 64) + 2 * (64 + 32) + (64 + 64) + 2 * (64 + 128) + (128 + 64)), lora.ParameterCount);
        using (no_grad()) foreach (var p in lora.Parameters()) p.copy_(randn(p.shape) * 0.1);
        model.eval();
        using var noGrad = no_grad();
        var adapted = model.forward(Ids()).clone();

        string dir = Path.Combine(_dir.Path, "llama-adapter");
        lora.Save(dir, "models/base");
        Assert.Equal(lora.Options.TargetModules, LoraAdapters.ReadOptions(dir).TargetModules);
        using (var file = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
        {
            Assert.Contains("base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight", file.Tensors.Keys);
            Assert.Equal([2L, 128L], file.Tensors["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"].Shape); // r × in
        }

        model.MergeLora();
        Assert.True(allclose(adapted, model.forward(Ids()), rtol: 0, atol: 1e-5), "the merged model computes what the adapted one did");
        Assert.Contains("q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj or all-linear for a llama model (got query_key_value)",
            Assert.Throws<ArgumentException>(() => model.AttachLora(new LoraOptions { TargetModules = ["query_key_value"] })).Message);
    }

    [Fact]
    public void AdaptersSaveInPeftLayoutAndLoadBack()
    {
        manual_seed(2);
        using var model = new TransformerForCausalLM(Tiny);
        var lora = model.AttachLora(new LoraOptions { Rank = 4, Alpha = 16, TargetModules = ["query_key_value", "dense"] });
        using (no_grad()) foreach (var p in lora.Parameters()) p.copy_(randn(p.shape) * 0.05);
        model.eval();
        using var noGrad = no_grad();
        var expected = model.forward(Ids()).clone();
        string dir = Path.Combine(_dir.Path, "adapter");
        lora.Save(dir, "models/base");

        var options = LoraAdapters.ReadOptions(dir);
        Assert.Equal(4, options.Rank);
        Assert.Equal(["query_key_value", "dense"], options.TargetModules);
        using (var file = SafeTensorsFile.Open(Path.Combine(dir, "adapter_model.safetensors")))
            Assert.Contains("base_model.model.gpt_neox.layers.0.attention.query_key_value.lora_A.weight", file.Tensors.Keys);

        using var fresh = new TransformerForCausalLM(Tiny);
        fresh.load_state_dict(model.state_dict());
        fresh.AttachLora(options).Load(dir);
        fresh.eval();
        Assert.True(allclose(expected, fresh.forward(Ids()), rtol: 0, atol: 0));

        var wrongRank = new TransformerForCausalLM(Tiny);
        var e = Assert.Throws<InvalidDataException>(() => wrongRank.AttachLora(options with { Rank = 8 }).Load(dir));
        Assert.Contains("(another rank?)", e.Message);
        Assert.Contains("LoRA target modules must be among", Assert.Throws<ArgumentException>(() => new TransformerForCausalLM(Tiny).AttachLora(new LoraOptions { TargetModules = ["embed_out"] })).Message);
    }

    [Fact]
    public void LoraFinetuningWritesAdaptersAndAMergedModel()
    {
        string baseDir = Path.Combine(_dir.Path, "base");
        manual_seed(3);
        using (var baseModel = new TransformerForCausalLM(Tiny)) HfCheckpoint.Save(baseModel, LoraTokenizer(), baseDir);
        var pairs = new DataFrame(new StringDataFrameColumn("Prompt", Enumerable.Range(0, 12).Select(i => $"Q: item {i}?")),
            new StringDataFrameColumn("Response", Enumerable.Range(0, 12).Select(i => $" answer {i % 3}")));
        var options = new InstructionTuningOptions
        {
            BaseModel = baseDir, OutputDirectory = Path.Combine(_dir.Path, "tuned"), BlockSize = 32, MicroBatchSize = 4, MaxSteps = 30,
            LearningRate = 1e-2, EvalFraction = 0, Threads = 1, Device = "cpu", Lora = new LoraOptions { Rank = 4 }, LogInterval = 1,
        };
        using var tuned = _ml.CausalLM().Trainers.InstructionTune(options).Fit(pairs);
        // A random base gives LoRA little to build on; the loss still has to fall clearly.
        Assert.True(tuned.Training!.History[^1].Loss < 0.9 * tuned.Training.History[0].Loss, string.Join(", ", tuned.Training.History.Select(r => $"{r.Loss:F3}")));
        Assert.Null(tuned.Model.Lora); // merged
        Assert.True(File.Exists(Path.Combine(options.OutputDirectory, "adapter", "adapter_config.json")));
        using var reloaded = CausalLMTransformer.Load(Path.Combine(options.OutputDirectory, "model"), device: "cpu");
        Assert.Equal(tuned.ScoreResponse("Q: item 1?", " answer 1"), reloaded.ScoreResponse("Q: item 1?", " answer 1"), 5);
    }

    static TextTokenizer LoraTokenizer() => TestTokenizers.Small(320, "Q: item 1? answer 1. Q: item 2? answer 2.");

    sealed class IdsRow
    {
        [Microsoft.ML.Data.VectorType] public int[] Ids { get; set; } = [];
    }
}
