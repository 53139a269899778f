using MLNetFinetune.Generation;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

[Collection(TorchCollection.Name)]
public class InstructionTuningTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly MLContext _ml = new(seed: 0);

    static readonly (string Country, string Capital)[] Facts =
    [
        ("Chile", "Santiago"), ("Peru", "Lima"), ("Ghana", "Accra"), ("Kenya", "Nairobi"), ("Norway", "Oslo"), ("Japan", "Tokyo"),
        ("Egypt", "Cairo"), ("Cuba", "Havana"), ("Nepal", "Kathmandu"), ("Spain", "Madrid"), ("Fiji", "Suva"), ("Mali", "Bamako"),
    ];

    public void Dispose() => _dir.Dispose();

    static TextTokenizer Tokenizer() => TestTokenizers.Small(320, [.. Facts.Select(f => $"The capital of {f.Country} is {f.Capital}.")]);

    // A base model directory: random tiny weights (it knows nothing), saved as any base model would be.
    string BaseModel()
    {
        string dir = Path.Combine(_dir.Path, "base");
        manual_seed(3);
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320));
        HfCheckpoint.Save(model, Tokenizer(), dir);
        return dir;
    }

    IDataView Pairs()
    {
        var df = new DataFrame(
            new StringDataFrameColumn("question", Facts.Select(f => $"What is the capital of {f.Country}?")),
            new StringDataFrameColumn("answer", Facts.Select(f => f.Capital)));
        return _ml.Transforms.Text.ApplyPromptTemplate("Prompt", PromptTemplates.QuestionAnswer.Prompt)
            .Append(_ml.Transforms.Text.ApplyPromptTemplate("Response", "\n{answer}"))
            .Fit(df).Transform(df);
    }

    InstructionTuningOptions Options(string baseModel, string name, int steps = 150, double evalFraction = 0, int patience = 0, int evalInterval = 50, bool pack = false,
        LoraOptions? lora = null) => new()
    {
        BaseModel = baseModel, OutputDirectory = Path.Combine(_dir.Path, name), BlockSize = 64, MicroBatchSize = 4, MaxSteps = steps, PackExamples = pack, Lora = lora,
        LearningRate = 5e-3, MinLearningRate = 5e-4, WarmupSteps = 5, WeightDecay = 0, EvalFraction = evalFraction, EvalInterval = evalInterval,
        EarlyStoppingPatience = patience, Threads = 1, Device = "cpu", ShuffleBuffer = 1, Generation = new GenerationOptions { MaxNewTokens = 8 },
    };

    [Fact]
    public void AFinetunedTinyModelAnswersWhatItWasTrainedOnWhileTheBaseDoesNot()
    {
        string baseDir = BaseModel();
        var pairs = Pairs();
        using var baseModel = CausalLMTransformer.Load(baseDir, new CausalLMScoringOptions
        {
            TextColumnName = null, PromptColumnName = "Prompt", ResponseColumnName = "Response", Generation = new GenerationOptions { MaxNewTokens = 8 },
        }, device: "cpu");
        var baseMetrics = _ml.CausalLM().Evaluate(baseModel.Transform(pairs), labelColumn: "answer");

        using var tuned = _ml.CausalLM().Trainers.InstructionTune(Options(baseDir, "tuned")).Fit(pairs);
        var scored = tuned.Transform(pairs);
        var metrics = _ml.CausalLM().Evaluate(scored, labelColumn: "answer");

        Assert.True(baseMetrics.ExactMatch.Value <= 0.1, $"base: {baseMetrics}");
        Assert.True(metrics.ExactMatch.Value >= 0.9, $"finetuned: {metrics}; answers: {string.Join(" | ", scored.GetColumn<ReadOnlyMemory<char>>("Generated"))}");
        Assert.True(metrics.MeanLoss < baseMetrics.MeanLoss / 4, $"response loss {metrics.MeanLoss} vs base {baseMetrics.MeanLoss}");

        // Base against finetuned, side by side, as Markdown and CSV.
        var comparison = ModelComparison.Compare(baseModel.Transform(pairs), scored, "question", "answer");
        string md = Path.Combine(_dir.Path, "compare.md"), csv = Path.Combine(_dir.Path, "compare.csv");
        comparison.WriteMarkdown(md);
        comparison.WriteCsv(csv);
        Assert.Contains("| exact match |", File.ReadAllText(md));
        Assert.Contains("What is the capital of Chile?", File.ReadAllText(md));
        Assert.StartsWith("question,expected,base_answer,finetuned_answer,base_exact,finetuned_exact", File.ReadAllText(csv));
        Assert.Equal(Facts.Length, System.Text.RegularExpressions.Regex.Matches(File.ReadAllText(csv), "What is the capital of").Count);
        Assert.Equal(metrics.ExactMatch.Hits, comparison.Rows.Count(r => r.TunedExact));

        // Multiple choice by log-likelihood on items made from the same facts.
        var items = Facts.Select((f, i) => new MultipleChoiceItem($"The capital of {f.Country} is", [Facts[(i + 1) % Facts.Length].Capital, f.Capital, Facts[(i + 5) % Facts.Length].Capital], 1));
        var prompted = Facts.Select((f, i) => new MultipleChoiceItem($"### Question:\nWhat is the capital of {f.Country}?\n\n### Answer:\n",
            [Facts[(i + 1) % Facts.Length].Capital, f.Capital, Facts[(i + 5) % Facts.Length].Capital], 1));
        var choice = MultipleChoiceEvaluator.Evaluate(prompted, tuned, separator: "");
        Assert.True(choice.Accuracy.Value >= 0.9, $"multiple choice: {choice.Accuracy}");
        Assert.Equal(Facts.Length, MultipleChoiceEvaluator.Evaluate(items, baseModel).Predictions.Count);
    }

    [Fact]
    public void PromptPositionsReceiveZeroGradientUnderMasking()
    {
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320));
        var encoder = new TokenizePairsTransformer(new TokenizePairsOptions { Tokenizer = Tokenizer() });
        var (ids, labels) = encoder.Encode("### Question:\nWhat is the capital of Chile?\n\n### Answer:", "\nSantiago");
        int prompt = labels.TakeWhile(l => l == TokenSequences.IgnoreIndex).Count();
        var logits = model.forward(tensor(ids, [1, ids.Length]).to(int64)).detach().requires_grad_(true);
        TransformerForCausalLM.LossFromLogits(logits, tensor(labels, [1, labels.Length]).to(int64)).backward();
        var grad = logits.grad!.abs().sum(2)[0].data<float>().ToArray();
        // Position t predicts token t + 1: positions before the last prompt token predict prompt tokens.
        Assert.All(grad[..(prompt - 1)], g => Assert.Equal(0f, g));
        Assert.All(grad[(prompt - 1)..^1], g => Assert.True(g > 0));
    }

    [Fact]
    public void EarlyStoppingStopsWhenEvalLossStopsImprovingAndKeepsTheBest()
    {
        string baseDir = BaseModel();
        var options = Options(baseDir, "early", steps: 400, evalFraction: 0.5, patience: 2, evalInterval: 10);
        using var tuned = new InstructionTuningEstimator(options).Fit(Pairs());
        var result = tuned.Training!;
        Assert.True(result.StoppedEarly, "the run should stop early");
        Assert.True(result.Steps < 400);
        var evals = result.History.Where(r => r.EvalLoss != null).Select(r => r.EvalLoss!.Value).ToList();
        Assert.True(evals[^1] > evals.Min() && evals[^2] > evals.Min(), "the last two evaluations did not improve");
        Assert.Equal(evals.Min(), result.BestEvalLoss);
        Assert.True(Directory.Exists(result.BestCheckpoint));
    }

    [Fact]
    public void PackingConcatenatesWholeExamplesUpToTheBlock()
    {
        var rows = new[] { new PairRow { Ids = [1, 2, 3], Labels = [-100, 2, 3] }, new PairRow { Ids = [4, 5], Labels = [4, 5] }, new PairRow { Ids = [6, 7, 8, 9], Labels = [-100, -100, 8, 9] } };
        var packed = new TrainingExamples(_ml.Data.LoadFromEnumerable(rows), "Ids", "Labels", 0, 0, 16, packInto: 6);
        var blocks = packed.Epoch(0, 0, 1).ToList();
        Assert.Equal(2, packed.ExamplesPerEpoch);
        Assert.Equal([1, 2, 3, 4, 5], blocks[0].Ids);
        // The second example's first token is not predicted from the first example.
        Assert.Equal([-100, 2, 3, -100, 5], blocks[0].Labels);
        Assert.Equal([0, 1, 2, 0, 1], blocks[0].Positions!);
        Assert.Equal([6, 7, 8, 9], blocks[1].Ids);
        Assert.Equal([0, 1, 2, 3], blocks[1].Positions!);
    }

    [Fact]
    public void EachPackedExampleGetsTheLogitsItGetsAlone()
    {
        var tokenizer = Tokenizer();
        var ids = new TokenizePairsTransformer(new TokenizePairsOptions { Tokenizer = tokenizer, MaxLength = 64 }).Transform(Pairs());
        var packed = new TrainingExamples(ids, "InputIds", "Labels", 0, 0, 320, packInto: 128);
        var blocks = packed.Epoch(0, 0, 1).Take(3).ToList();
        Assert.True(blocks.All(b => b.Positions!.Count(p => p == 0) >= 2), "each block should hold several examples");
        Assert.NotEqual(blocks[0].Ids.Length, blocks[2].Ids.Length); // so the batch has padding

        manual_seed(5);
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320));
        model.eval();
        using var _ = no_grad();
        using var batch = TrainingExamples.Collate(blocks, tokenizer.PadId ?? 0, CPU);
        using var logits = model.Forward(batch.Ids, batch.PositionIds, batch.AttentionMask);
        using var runOn = model.Forward(batch.Ids); // the same rows without per-example attention
        int checkedExamples = 0;
        for (int r = 0; r < blocks.Count; r++)
        {
            var starts = Enumerable.Range(0, blocks[r].Ids.Length).Where(t => blocks[r].Positions![t] == 0).Append(blocks[r].Ids.Length).ToArray();
            for (int e = 0; e + 1 < starts.Length; e++)
            {
                int start = starts[e], length = starts[e + 1] - start;
                using var alone = model.Forward(tensor(blocks[r].Ids[start..(start + length)], [1, length]).to(int64));
                using var inPack = logits[r, start..(start + length)].unsqueeze(0);
                float diff = (inPack - alone).abs().max().item<float>();
                Assert.True(diff <= 1e-5f, $"row {r}, example {e}: max abs diff {diff}");
                if (e > 0) Assert.True((runOn[r, start..(start + length)].unsqueeze(0) - alone).abs().max().item<float>() > 1e-3f, "without the mask the example should see its neighbours");
                checkedExamples++;
            }
        }
        Assert.True(checkedExamples >= 6);
    }

    [Fact]
    public void APackedFinetuneLowersTheLoss()
    {
        var options = Options(BaseModel(), "packed", steps: 60, pack: true);
        options.BlockSize = 128; // several pairs a sequence
        using var tuned = new InstructionTuningEstimator(options).Fit(Pairs());
        var history = tuned.Training!.History;
        Assert.True(history[^1].Loss < 0.5 * history[0].Loss, $"loss went from {history[0].Loss} to {history[^1].Loss}");
    }

    [Fact]
    public void ResumingAcrossAnEpochBoundaryWithAFullShuffleContinuesExactly()
    {
        string baseDir = BaseModel();
        InstructionTuningOptions Run(string name, string? resume)
        {
            // 12 pairs, 3 held out: 9 training examples per epoch in micro-batches of 4, so batches straddle epochs.
            var o = Options(baseDir, name, steps: 8, evalFraction: 0.25, evalInterval: 3);
            (o.ShuffleBuffer, o.LogInterval, o.CheckpointInterval, o.KeepLastCheckpoints, o.ResumeFrom) = (256, 1, 3, 5, resume);
            return o;
        }
        using var uninterrupted = new InstructionTuningEstimator(Run("full", null)).Fit(Pairs());
        string halfway = Path.Combine(_dir.Path, "full", "checkpoints", "step-0000003");
        var state = TrainingCheckpoint.ReadState(halfway);
        Assert.True(state.FullShuffle);
        Assert.Equal((1, 3L), (state.Epoch, state.ExamplesInEpoch));

        using var continued = new InstructionTuningEstimator(Run("resumed", halfway)).Fit(Pairs());
        var expected = uninterrupted.Training!.History.Where(r => r.Step > 3).Select(r => (r.Step, r.Epoch, r.Loss, r.EvalLoss, r.Tokens)).ToList();
        var actual = continued.Training!.History.Where(r => r.Step > 3).Select(r => (r.Step, r.Epoch, r.Loss, r.EvalLoss, r.Tokens)).ToList();
        Assert.Equal(5, actual.Count);
        Assert.Equal(3, actual[^1].Epoch); // two epoch boundaries after the resume
        Assert.Equal(expected, actual);

        var streamed = Run("streamed", halfway);
        streamed.InMemoryShuffleRows = 0;
        var e = Assert.Throws<ArgumentException>(() => new InstructionTuningEstimator(streamed).Fit(Pairs()));
        Assert.Contains("seed 0, a full shuffle in memory; these options give 8 steps, seed 0, shuffle window 256.", e.Message);
    }

    // Every parameter, bit for bit.
    internal static void AssertSameWeights(TransformerForCausalLM expected, TransformerForCausalLM actual)
    {
        var (e, a) = (LoraTests.Snapshot(expected), LoraTests.Snapshot(actual));
        Assert.Equal(e.Keys.Order(), a.Keys.Order());
        foreach (var (name, values) in e) Assert.True(values.SequenceEqual(a[name]), $"{name} differs");
    }

    [Fact]
    public void TheSameSeedGivesTheSameLossesAndWeightsAndAnotherSeedDoesNot()
    {
        string baseDir = BaseModel();
        // LoRA with dropout and a full shuffle, so the seed reaches the adapters' init, the dropout masks and the data order.
        CausalLMTransformer Tune(string name, int seed)
        {
            var o = Options(baseDir, name, steps: 6, lora: new LoraOptions { Rank = 4, Dropout = 0.1 });
            (o.Seed, o.ShuffleBuffer, o.LogInterval) = (seed, 256, 1);
            return new InstructionTuningEstimator(o).Fit(Pairs());
        }
        using var first = Tune("seed0", 0);
        using var again = Tune("seed0-again", 0);
        using var other = Tune("seed1", 1);
        var losses = first.Training!.History.Select(r => r.Loss).ToList();
        Assert.Equal(6, losses.Count);
        Assert.Equal(losses, again.Training!.History.Select(r => r.Loss));
        AssertSameWeights(first.Model, again.Model);
        Assert.NotEqual(losses, other.Training!.History.Select(r => r.Loss));
    }

    [Fact]
    public void RestoreBestReturnsTheBestCheckpointsWeightsNotTheLastSteps()
    {
        string baseDir = BaseModel();
        // Half the facts held out: learning the other half's capitals soon makes the held-out answers worse.
        var options = Options(baseDir, "best", steps: 20, evalFraction: 0.5, evalInterval: 5);
        options.MinLearningRate = options.LearningRate; // no decay to settle the end
        using var tuned = new InstructionTuningEstimator(options).Fit(Pairs());
        var result = tuned.Training!;
        var evals = result.History.Where(r => r.EvalLoss != null).Select(r => (r.Step, Loss: r.EvalLoss!.Value)).ToList();
        Assert.True(evals[^1].Loss > result.BestEvalLoss, $"the last evaluation should not be the best: {string.Join(", ", evals)}");

        var config = ModelConfig.Preset("tiny", 320);
        using var best = new TransformerForCausalLM(config);
        TrainingCheckpoint.LoadWeights(result.BestCheckpoint!, best);
        AssertSameWeights(best, tuned.Model);
        using var last = new TransformerForCausalLM(config);
        TrainingCheckpoint.LoadWeights(result.LastCheckpoint, last);
        var (lastWeights, returned) = (LoraTests.Snapshot(last), LoraTests.Snapshot(tuned.Model));
        Assert.Contains(lastWeights, p => !p.Value.SequenceEqual(returned[p.Key]));
        var (saved, _) = HfCheckpoint.Load(Path.Combine(options.OutputDirectory, "model"));
        using (saved) AssertSameWeights(best, saved);
    }

    [Theory]
    [InlineData(2, false)] // gradient accumulation: a step spans two micro-batches
    [InlineData(1, true)]  // LoRA with dropout: adapter checkpoints, and the dropout masks after the resume need the saved RNG state
    public void ResumingWithAccumulationOrLoraContinuesExactly(int accumulation, bool lora)
    {
        string baseDir = BaseModel();
        InstructionTuningOptions Run(string name, string? resume)
        {
            var o = Options(baseDir, name, steps: 6, lora: lora ? new LoraOptions { Rank = 4, Dropout = 0.2 } : null);
            (o.GradientAccumulationSteps, o.ShuffleBuffer, o.LogInterval, o.CheckpointInterval, o.KeepLastCheckpoints, o.ResumeFrom) = (accumulation, 256, 1, 3, 5, resume);
            return o;
        }
        using var uninterrupted = new InstructionTuningEstimator(Run("full", null)).Fit(Pairs());
        string halfway = Path.Combine(_dir.Path, "full", "checkpoints", "step-0000003");
        Assert.Equal(lora, File.Exists(Path.Combine(halfway, "adapter_model.safetensors")));

        using var continued = new InstructionTuningEstimator(Run("resumed", halfway)).Fit(Pairs());
        var expected = uninterrupted.Training!.History.Where(r => r.Step > 3).Select(r => (r.Step, r.Epoch, r.Loss, r.Tokens)).ToList();
        var actual = continued.Training!.History.Where(r => r.Step > 3).Select(r => (r.Step, r.Epoch, r.Loss, r.Tokens)).ToList();
        Assert.Equal(3, actual.Count);
        Assert.Equal(expected, actual);
        AssertSameWeights(uninterrupted.Model, continued.Model);
    }

    sealed class PairRow
    {
        [VectorType] public int[] Ids { get; set; } = [];
        [VectorType] public int[] Labels { get; set; } = [];
    }

    [Fact]
    public void SamplingIsSeededAndTopKOfOneIsGreedy()
    {
        string baseDir = BaseModel();
        using var model = CausalLMTransformer.Load(baseDir, device: "cpu");
        string greedy = model.Generate("What is", new GenerationOptions { MaxNewTokens = 6 });
        Assert.Equal(greedy, model.Generate("What is", new GenerationOptions { MaxNewTokens = 6, Temperature = 1.5, TopK = 1, Seed = 7 }));
        var sampled = new GenerationOptions { MaxNewTokens = 6, Temperature = 1.5, TopP = 0.9, Seed = 7 };
        string sampledText = model.Generate("What is", sampled);
        Assert.NotEqual(greedy, sampledText); // it did sample
        Assert.Equal(sampledText, model.Generate("What is", sampled));
        var outputs = Enumerable.Range(0, 5).Select(seed => model.Generate("What is", new GenerationOptions { MaxNewTokens = 6, Temperature = 2, Seed = seed })).ToHashSet();
        Assert.True(outputs.Count > 1, "different seeds should give different samples from a random model");
    }

    [Fact]
    public void BadInputsAreNamed()
    {
        string baseDir = BaseModel();
        var empty = new DataFrame(new StringDataFrameColumn("Prompt", ["Q: a", "Q: b"]), new StringDataFrameColumn("Response", [" x", " "]));
        var e = Assert.Throws<InvalidDataException>(() => new InstructionTuningEstimator(Options(baseDir, "empty", steps: 2)).Fit(empty));
        Assert.Equal("Row 1: the response ('Response') is empty; every example needs an answer to learn.", e.Message);

        var missing = new DataFrame(new StringDataFrameColumn("question", ["q"]), new StringDataFrameColumn("answer", ["a"]));
        var m = Assert.Throws<ArgumentOutOfRangeException>(() => new InstructionTuningEstimator(Options(baseDir, "missing", steps: 2)).Fit(missing));
        Assert.Contains("Instruction tuning reads column 'Prompt', which the input does not have. Input columns: 'question', 'answer'", m.Message);

        foreach (var f in new[] { "tokenizer.json", "vocab.json", "merges.txt" }) File.Delete(Path.Combine(baseDir, f));
        var t = Assert.Throws<FileNotFoundException>(() => new InstructionTuningEstimator(Options(baseDir, "notok", steps: 2)).Fit(Pairs()));
        Assert.Contains("has no tokenizer", t.Message);
    }
}
