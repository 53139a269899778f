using Microsoft.Data.Analysis;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

[Collection(TorchCollection.Name)]
public class FlatAdamWTests(ITestOutputHelper output) : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly MLContext _ml = new(seed: 0);
    static readonly Lazy<TextTokenizer> SmallTokenizer = new(() => TestTokenizers.Small(300));

    public void Dispose() => _dir.Dispose();

    static ModelConfig Tiny => ModelConfig.Preset("tiny", 320);

    // The trainer's groups: decay on matrices and embeddings, none on biases and norms.
    static List<AdamW.ParamGroup> Groups(IEnumerable<Parameter> parameters)
    {
        var list = parameters.ToList();
        return
        [
            new(list.Where(p => p.dim() >= 2), 1e-2, 0.9, 0.95, 1e-8, 0.1, false, false),
            new(list.Where(p => p.dim() < 2), 1e-2, 0.9, 0.95, 1e-8, 0, false, false),
        ];
    }

    [Fact]
    public void TwentyStepsAreBitIdenticalToTorchSharpsAdamW()
    {
        manual_seed(0);
        using var reference = new TransformerForCausalLM(Tiny);
        manual_seed(0);
        using var flat = new TransformerForCausalLM(Tiny);
        var perParameterGroups = Groups(reference.parameters());
        var adamw = optim.AdamW(perParameterGroups);
        using var flatAdamW = new FlatAdamW(Groups(flat.parameters()), flat.parameters()); // the norm in the model's order, as the reference's
        var generator = new Generator(seed: 7);
        var initial = LoraTests.Snapshot(flat);

        double largestNorm = 0;
        for (int step = 0; step < 20; step++)
        {
            using var scope = NewDisposeScope();
            // Random batches and a schedule that moves the learning rate every step; clipping bites on most steps.
            var ids = randint(0, 320, [4, 24], dtype: ScalarType.Int64, generator: generator);
            double lr = 1e-2 * (step + 1) / 20;
            foreach (var g in adamw.ParamGroups) g.LearningRate = lr;
            foreach (var g in flatAdamW.ParamGroups) g.LearningRate = lr;

            reference.Loss(ids, ids).backward();
            double referenceNorm = nn.utils.clip_grad_norm_(reference.parameters(), 1.0);
            adamw.step();
            adamw.zero_grad();

            flat.Loss(ids, ids).backward();
            double flatNorm = flatAdamW.ClipGradNorm(1.0);
            flatAdamW.step();
            flatAdamW.zero_grad();

            Assert.Equal(referenceNorm, flatNorm);
            largestNorm = Math.Max(largestNorm, referenceNorm);
        }
        Assert.True(largestNorm > 1, $"clipping never applied (largest norm {largestNorm})");

        var expected = reference.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        double worst = 0;
        string worstName = "";
        foreach (var (name, p) in flat.named_parameters())
        {
            double diff = (p - expected[name]).abs().max().item<float>();
            if (diff > worst) (worst, worstName) = (diff, name);
        }
        output.WriteLine($"max |flat - per-parameter| after 20 steps: {worst:E3} ({worstName})");
        // The issue's acceptance is 1e-6; with the norm summed in the same order nothing differs at all.
        Assert.True(worst == 0, $"{worstName} differs by {worst:E3}");
        // The weights did move, so agreement is not agreement on doing nothing.
        var moved = LoraTests.Snapshot(flat).Max(p => p.Value.Zip(initial[p.Key], (a, b) => Math.Abs(a - b)).Max());
        Assert.True(moved > 1e-2, $"the weights moved by at most {moved}");
    }

    [Fact]
    public void ParametersBecomeViewsOfOneBufferAndGradientsLandInIt()
    {
        manual_seed(0);
        using var model = new TransformerForCausalLM(Tiny);
        var before = LoraTests.Snapshot(model);
        using var optimizer = new FlatAdamW(Groups(model.parameters()));
        Assert.Equal(model.parameters().Sum(p => p.numel()), optimizer.ParameterCount);
        // The values survive the move, the model's state_dict still names every weight, and each weight sits right
        // after the previous one of its group in one storage.
        Assert.Equal(before, LoraTests.Snapshot(model));
        var parameters = optimizer.ParamGroups.SelectMany(g => g.Parameters).ToList();
        Assert.Equal(0, parameters[0].storage_offset());
        for (int i = 1; i < parameters.Count; i++)
            Assert.Equal(parameters[i - 1].storage_offset() + parameters[i - 1].numel(), parameters[i].storage_offset());

        using var ids = tensor(new long[] { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3 }, [1, 10]);
        model.Loss(ids, ids).backward();
        double norm = optimizer.ClipGradNorm(double.PositiveInfinity);
        double perParameter = Math.Sqrt(parameters.Sum(p => p.grad!.pow(2).sum().item<float>()));
        Assert.Equal(perParameter, norm, 1e-5 * perParameter);
        optimizer.zero_grad();
        Assert.All(parameters, p => Assert.Equal(0f, p.grad!.abs().max().item<float>()));
    }

    IDataView Docs()
    {
        var pairs = InstructionData.Load(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl"));
        return new DataFrame(new StringDataFrameColumn("Text", pairs["question"].Cast<string>().Zip(pairs["answer"].Cast<string>(), (q, a) => q + " " + a).ToArray()));
    }

    PretrainingOptions Options(string name, AdamWKind optimizer, int steps, string? resume = null) => new()
    {
        Tokenizer = SmallTokenizer.Value, Preset = "tiny", OutputDirectory = Path.Combine(_dir.Path, name), BlockSize = 32, MicroBatchSize = 4,
        MaxSteps = steps, LearningRate = 3e-3, MinLearningRate = 3e-4, WarmupSteps = 2, Threads = 1, Device = "cpu", LogInterval = 1, EvalInterval = 4,
        EvalFraction = 0.1, CheckpointInterval = 4, KeepLastCheckpoints = 5, GradientClipNorm = 1.0, WeightDecay = 0.1, Optimizer = optimizer, ResumeFrom = resume,
    };

    static List<(int Step, double Loss, double? EvalLoss, long Tokens)> After(CausalLMTransformer model, int step) =>
        model.Training!.History.Where(r => r.Step > step).Select(r => (r.Step, r.Loss, r.EvalLoss, r.Tokens)).ToList();

    [Fact]
    public void TheFlatOptimizerTrainsAndResumesExactlyFromACheckpoint()
    {
        var full = Options("full", AdamWKind.Flat, 8);
        using var uninterrupted = new PretrainingEstimator(full).Fit(Docs());
        var history = uninterrupted.Training!.History;
        Assert.True(history[^1].Loss < history[0].Loss, $"loss went from {history[0].Loss} to {history[^1].Loss}");
        string halfway = Path.Combine(full.OutputDirectory, "checkpoints", "step-0000004");

        using var continued = new PretrainingEstimator(Options("resumed", AdamWKind.Flat, 8, halfway)).Fit(Docs());
        Assert.Equal(4, After(continued, 4).Count);
        Assert.Equal(After(uninterrupted, 4), After(continued, 4));
    }

    [Fact]
    public void EitherOptimizerResumesTheOthersCheckpoint()
    {
        // One optimizer.bin format: a run checkpointed on CPU (per-parameter by default) resumes on CUDA (flat), and back.
        // Evaluation (EvalInterval 4) runs too, so the eval losses agree as well.
        using var perParameter = new PretrainingEstimator(Options("per-parameter", AdamWKind.PerParameter, 8)).Fit(Docs());
        using var flat = new PretrainingEstimator(Options("flat", AdamWKind.Flat, 8)).Fit(Docs());
        string Halfway(string run) => Path.Combine(_dir.Path, run, "checkpoints", "step-0000004");
        using var flatFromPerParameter = new PretrainingEstimator(Options("flat-from-per-parameter", AdamWKind.Flat, 8, Halfway("per-parameter"))).Fit(Docs());
        using var perParameterFromFlat = new PretrainingEstimator(Options("per-parameter-from-flat", AdamWKind.PerParameter, 8, Halfway("flat"))).Fit(Docs());

        // The two optimizers compute the same bits, so each resumed run is exactly the other kind's uninterrupted run.
        Assert.Equal(After(perParameter, 0), After(flat, 0));
        Assert.Equal(After(perParameter, 4), After(flatFromPerParameter, 4));
        Assert.Equal(After(flat, 4), After(perParameterFromFlat, 4));
        Assert.Equal(4, After(flatFromPerParameter, 4).Count);
    }

    [Fact]
    public void LoraWithTheFlatOptimizerTrainsOnlyTheAdapters()
    {
        manual_seed(0);
        using var model = new TransformerForCausalLM(Tiny);
        var before = LoraTests.Snapshot(model);
        var lora = model.AttachLora(new LoraOptions { Rank = 4, Alpha = 8 });
        var adaptersBefore = lora.Parameters().Select(p => p.detach().clone()).ToList();
        var rows = Enumerable.Range(0, 16).Select(i => new IdsRow { Ids = Enumerable.Range(0, 24).Select(t => (t * 7 + i) % 300).ToArray() }).ToList();
        var data = new TrainingExamples(_ml.Data.LoadFromEnumerable(rows), "Ids", null, 0, 0, 320);
        var options = new PretrainingOptions
        {
            Tokenizer = TextTokenizer.Gpt2(), OutputDirectory = Path.Combine(_dir.Path, "lora"), MaxSteps = 10, MicroBatchSize = 4, BlockSize = 24,
            LearningRate = 1e-2, EvalFraction = 0, Threads = 1, Device = "cpu", CheckpointInterval = 5, LogInterval = 1, Optimizer = AdamWKind.Flat,
        };
        var result = CausalLMTrainer.Train(model, TestTokenizers.Small(320, "Q: item 1? answer 1. Q: item 2? answer 2."), data, options);

        Assert.True(result.History[^1].Loss < result.History[0].Loss, string.Join(", ", result.History.Select(r => $"{r.Step}:{r.Loss:F4}")));
        foreach (var (name, values) in LoraTests.Snapshot(model)) Assert.Equal(before[name], values); // base weights: not a bit changed
        Assert.All(lora.Parameters().Zip(adaptersBefore), pair => Assert.True((pair.First - pair.Second).abs().max().item<float>() > 0));
        Assert.True(File.Exists(Path.Combine(result.LastCheckpoint, "adapter_model.safetensors")));
    }

    [Fact]
    public void PretrainTakesTheOptimizerFromTheCommandLine()
    {
        string corpus = _dir.File("corpus.jsonl", string.Concat(Enumerable.Range(0, 20).Select(i => $"{{\"text\": \"The capital of country {i} is city {i}.\"}}\n")));
        string[] Args(string run, string optimizer) => ["pretrain", "--corpus", corpus, "--tokenizer", RepoPaths.Of("models", "facts-base"), "--preset", "tiny",
            "--out", Path.Combine(_dir.Path, run), "--steps", "2", "--threads", "1", "--device", "cpu", "--block-size", "16", "--batch-size", "2", "--optimizer", optimizer];
        Cli.CliRunner.Succeeds("", Args("cli-flat", "flat"));
        Assert.True(File.Exists(Path.Combine(_dir.Path, "cli-flat", "checkpoints", "step-0000002", TrainingCheckpoint.OptimizerFile)));
        var (code, _, error) = Cli.CliRunner.Run(Args("cli-adam", "adam"));
        Assert.NotEqual(0, code);
        Assert.Contains("adam", error);
    }

    sealed class IdsRow
    {
        [Microsoft.ML.Data.VectorType] public int[] Ids { get; set; } = [];
    }
}
