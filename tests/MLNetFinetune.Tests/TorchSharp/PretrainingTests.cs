using MLNetFinetune.Generation;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TokenShards;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Tests.TorchSharp;

[Collection(TorchCollection.Name)]
public class PretrainingTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly MLContext _ml = new(seed: 0);
    static readonly Lazy<TextTokenizer> SmallTokenizer = new(() => TestTokenizers.Small(300));

    public void Dispose() => _dir.Dispose();

    static IDataView Texts(params string[] texts) => new DataFrame(new StringDataFrameColumn("Text", texts));

    IDataView Docs()
    {
        var pairs = InstructionData.Load(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl"));
        return Texts(pairs["question"].Cast<string>().Zip(pairs["answer"].Cast<string>(), (q, a) => q + " " + a).ToArray());
    }

    PretrainingOptions Options(string name, Action<PretrainingOptionsBuilder>? configure = null)
    {
        var b = new PretrainingOptionsBuilder { OutputDirectory = Path.Combine(_dir.Path, name) };
        configure?.Invoke(b);
        return new PretrainingOptions
        {
            Tokenizer = SmallTokenizer.Value, Preset = "tiny", OutputDirectory = b.OutputDirectory, BlockSize = 32, MicroBatchSize = 4,
            MaxSteps = b.MaxSteps, LearningRate = b.LearningRate, MinLearningRate = b.LearningRate / 10, WarmupSteps = 2, Threads = 1,
            Device = "cpu", LogInterval = b.LogInterval, EvalInterval = b.EvalInterval, EvalFraction = b.EvalFraction, CheckpointInterval = b.CheckpointInterval,
            KeepLastCheckpoints = b.Keep, GradientClipNorm = b.Clip, ResumeFrom = b.ResumeFrom, WeightDecay = b.WeightDecay, Progress = b.Progress, Seed = b.Seed,
        };
    }

    [Fact]
    public void TokenShardsOfAnotherBlockSizeOrTokenizerAreRefusedNamingBoth()
    {
        string shards = Path.Combine(_dir.Path, "shards");
        var report = TokenShardWriter.Write(new TokenShardOptions
        {
            Corpus = new CorpusOptions { Path = RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst") },
            Tokenizer = TextTokenizer.Load(RepoPaths.Of("models", "facts-base")), OutputDirectory = shards,
        });
        TokenShardManifest.Write(shards, report.Inputs);

        using (var wrongBlocks = _ml.Data.LoadTokenShards(shards, blockSize: 64))
        {
            var e = Assert.Throws<ArgumentException>(() => new PretrainingEstimator(Options("blocks")).Fit(wrongBlocks));
            Assert.Equal("The token shards were opened in blocks of 64 tokens but BlockSize is 32: open them with ml.Data.LoadTokenShards(path, 32).", e.Message);
        }
        using var blocks = _ml.Data.LoadTokenShards(shards, blockSize: 32);
        var other = Assert.Throws<ArgumentException>(() => new PretrainingEstimator(Options("tokenizer")).Fit(blocks));
        Assert.StartsWith("The token shards were written by tokenizer '", other.Message);
        Assert.Contains("(2048 tokens, end of document 0); this run's tokenizer", other.Message);
        Assert.EndsWith("Tokenize the corpus again with this tokenizer.", other.Message);
    }

    sealed class PretrainingOptionsBuilder
    {
        public string OutputDirectory = "";
        public int MaxSteps = 20, LogInterval = 5, EvalInterval = 10, CheckpointInterval = 0, Keep = 2, Seed;
        public double LearningRate = 3e-3, EvalFraction = 0.1, Clip = 1.0, WeightDecay = 0.1;
        public string? ResumeFrom;
        public IProgress<TrainingProgress>? Progress;
    }

    [Fact]
    public void LossFallsOnASmallCorpusAndEverythingIsWritten()
    {
        var reports = new List<TrainingProgress>();
        var options = Options("run", b => { b.MaxSteps = 60; b.EvalInterval = 30; b.Progress = new SynchronousProgress<TrainingProgress>(reports.Add); });
        using var model = _ml.CausalLM().Trainers.Pretrain(options).Fit(Docs());

        var history = model.Training!.History;
        Assert.True(history[^1].Loss < 0.7 * history[0].Loss, $"loss went from {history[0].Loss} to {history[^1].Loss}");
        Assert.NotNull(history[^1].EvalLoss);
        Assert.Equal(60, reports[^1].Step);
        Assert.True(reports[^1].TokensPerSecond > 0);
        Assert.True(File.Exists(Path.Combine(options.OutputDirectory, "metrics.csv")));
        Assert.Equal(history.Count + 1, File.ReadAllLines(Path.Combine(options.OutputDirectory, "metrics.csv")).Length);
        Assert.True(File.Exists(Path.Combine(options.OutputDirectory, "model", "model.safetensors")));
        Assert.True(Directory.Exists(Path.Combine(options.OutputDirectory, "checkpoints", "best")));
        Assert.True(Directory.Exists(model.Training.LastCheckpoint));
    }

    [Fact]
    public void TheSameSeedGivesTheSameLossesAndWeightsAndAnotherSeedDoesNot()
    {
        // The seed reaches the random initial weights and the shuffled order of the blocks.
        CausalLMTransformer Pretrain(string name, int seed) =>
            new PretrainingEstimator(Options(name, b => { b.MaxSteps = 6; b.LogInterval = 1; b.EvalFraction = 0; b.Seed = seed; })).Fit(Docs());
        using var first = Pretrain("seed0", 0);
        using var again = Pretrain("seed0-again", 0);
        using var other = Pretrain("seed1", 1);
        var losses = first.Training!.History.Select(r => r.Loss).ToList();
        Assert.Equal(6, losses.Count);
        Assert.Equal(losses, again.Training!.History.Select(r => r.Loss));
        InstructionTuningTests.AssertSameWeights(first.Model, again.Model);
        Assert.NotEqual(losses, other.Training!.History.Select(r => r.Loss));
    }

    [Fact]
    public void ATinyModelOverfitsAFewSentencesAndThenRecitesThem()
    {
        string[] sentences = ["The capital of Chile is Santiago.", "The capital of Peru is Lima.", "The capital of Ghana is Accra."];
        var options = Options("overfit", b => { b.MaxSteps = 150; b.EvalFraction = 0; b.LearningRate = 1e-2; b.WeightDecay = 0; });
        var pretrain = new PretrainingEstimator(new PretrainingOptions
        {
            // Blocks span whole sentences (about 28 tokens each here), so each fact is seen with its subject.
            Tokenizer = options.Tokenizer, Preset = "tiny", OutputDirectory = options.OutputDirectory, BlockSize = 64, MicroBatchSize = 4,
            MaxSteps = 150, LearningRate = 1e-2, MinLearningRate = 1e-3, WarmupSteps = 5, WeightDecay = 0, EvalFraction = 0, Threads = 1,
            Device = "cpu", ShuffleBuffer = 1,
        });
        using var model = pretrain.Fit(Texts(Enumerable.Repeat(sentences, 8).SelectMany(s => s).ToArray()));
        Assert.True(model.Training!.History[^1].Loss < 0.1, $"final loss {model.Training.History[^1].Loss}");
        Assert.Equal(" Santiago.", model.Generate("The capital of Chile is", 12)[..10]);
        Assert.Equal(" Accra.", model.Generate("The capital of Ghana is", 12)[..7]);
    }

    [Fact]
    public void ResumingFromACheckpointContinuesExactlyAsTheUninterruptedRun()
    {
        var full = Options("full", b => { b.MaxSteps = 8; b.LogInterval = 1; b.EvalInterval = 4; b.CheckpointInterval = 4; b.Keep = 5; });
        using var uninterrupted = new PretrainingEstimator(full).Fit(Docs());
        string halfway = Path.Combine(full.OutputDirectory, "checkpoints", "step-0000004");
        Assert.True(Directory.Exists(halfway));

        var resumed = Options("resumed", b => { b.MaxSteps = 8; b.LogInterval = 1; b.EvalInterval = 4; b.CheckpointInterval = 4; b.ResumeFrom = halfway; });
        using var continued = new PretrainingEstimator(resumed).Fit(Docs());

        var expected = uninterrupted.Training!.History.Where(r => r.Step > 4).Select(r => (r.Step, r.Loss, r.EvalLoss, r.Tokens)).ToList();
        var actual = continued.Training!.History.Where(r => r.Step > 4).Select(r => (r.Step, r.Loss, r.EvalLoss, r.Tokens)).ToList();
        Assert.Equal(4, actual.Count);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void OnlyTheLastCheckpointsAreKept()
    {
        var options = Options("keep", b => { b.MaxSteps = 6; b.CheckpointInterval = 2; b.Keep = 2; b.EvalFraction = 0; });
        using var _ = new PretrainingEstimator(options).Fit(Docs());
        var steps = Directory.GetDirectories(Path.Combine(options.OutputDirectory, "checkpoints")).Select(d => Path.GetFileName(d)!).Order().ToArray();
        Assert.Equal(["step-0000004", "step-0000006"], steps);
    }

    [Fact]
    public void ADivergingRunStopsNamingTheStepAndTheLastCheckpoint()
    {
        var options = Options("diverge", b => { b.MaxSteps = 40; b.LearningRate = 1e6; b.Clip = 0; b.CheckpointInterval = 1; b.EvalFraction = 0; b.WeightDecay = 0; });
        var e = Assert.Throws<TrainingDivergedException>(() => new PretrainingEstimator(options).Fit(Docs()));
        Assert.Matches(@"The training loss is (NaN|∞|-∞|Infinity) at step \d+\. The last good checkpoint is .*step-\d+", e.Message);
    }

    [Fact]
    public void TheTransformerScoresRowsAndRoundTripsThroughItsDirectory()
    {
        var options = Options("score", b => b.MaxSteps = 10);
        using var model = new PretrainingEstimator(options).Fit(Docs());
        var data = Texts("What is MLNetFinetune?", "zzzz qqqq xxxx");
        var scored = model.Transform(data);
        var losses = scored.GetColumn<float>("Loss").ToArray();
        var perplexities = scored.GetColumn<float>("Perplexity").ToArray();
        Assert.Equal(Math.Exp(losses[0]), perplexities[0], 3);

        string dir = Path.Combine(_dir.Path, "saved");
        model.Save(dir);
        using var loaded = CausalLMTransformer.Load(dir, device: "cpu");
        Assert.Equal(losses, loaded.Transform(data).GetColumn<float>("Loss").ToArray());

        using var generator = loaded.WithScoring(new CausalLMScoringOptions { TextColumnName = null, PromptColumnName = "Text", Generation = new GenerationOptions { MaxNewTokens = 5 } });
        var generated = generator.Transform(data).GetColumn<ReadOnlyMemory<char>>("Generated").Select(g => g.ToString()).ToArray();
        Assert.Equal(2, generated.Length);
        Assert.Equal(loaded.Generate("What is MLNetFinetune?", 5), generated[0]);
    }

    [Fact]
    public void Bfloat16MixedPrecisionTrainsAndKeepsFloat32Weights()
    {
        var fp32 = Options("fp32", b => { b.MaxSteps = 30; b.EvalFraction = 0; });
        var bf16 = new PretrainingOptions
        {
            Tokenizer = fp32.Tokenizer, Preset = "tiny", OutputDirectory = Path.Combine(_dir.Path, "bf16"), BlockSize = 32, MicroBatchSize = 4,
            MaxSteps = 30, LearningRate = 3e-3, MinLearningRate = 3e-4, WarmupSteps = 2, EvalFraction = 0, Threads = 1, Device = "cpu", DType = "bfloat16",
        };
        using var reference = new PretrainingEstimator(fp32).Fit(Docs());
        using var mixed = new PretrainingEstimator(bf16).Fit(Docs());
        var (first, last) = (mixed.Training!.History[0].Loss, mixed.Training.History[^1].Loss);
        Assert.True(last < 0.8 * first, $"bf16 loss went from {first} to {last}");
        Assert.InRange(last, 0.8 * reference.Training!.History[^1].Loss, 1.2 * reference.Training.History[^1].Loss);
        Assert.Null(mixed.Model.ComputeType);
        Assert.All(mixed.Model.parameters(), p => Assert.Equal(global::TorchSharp.torch.ScalarType.Float32, p.dtype));

        var bad = Assert.Throws<ArgumentException>(() => new PretrainingEstimator(new PretrainingOptions
        {
            Tokenizer = fp32.Tokenizer, Preset = "tiny", OutputDirectory = Path.Combine(_dir.Path, "bad"), MaxSteps = 1, DType = "float8",
        }));
        Assert.Contains("DType 'float8' is not supported: use float32 or bfloat16", bad.Message);
    }

    [Fact]
    public void TrainsFromATokenIdsColumn()
    {
        var tokenizer = SmallTokenizer.Value;
        var ids = _ml.Transforms.Text.TokenizeForCausalLM(new TokenizeOptions { Tokenizer = tokenizer, AddEos = true, AttentionMaskColumnName = null, OutputColumnName = "Ids" })
            .Fit(Docs()).Transform(Docs());
        var options = new PretrainingOptions
        {
            Tokenizer = tokenizer, Preset = "tiny", OutputDirectory = Path.Combine(_dir.Path, "ids"), TokenIdsColumnName = "Ids", BlockSize = 32,
            MicroBatchSize = 4, MaxSteps = 30, LearningRate = 3e-3, MinLearningRate = 3e-4, WarmupSteps = 2, EvalFraction = 0, Threads = 1, Device = "cpu",
        };
        using var model = _ml.CausalLM().Trainers.Pretrain(options).Fit(ids);
        Assert.True(model.Training!.History[^1].Loss < 0.8 * model.Training.History[0].Loss);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => _ml.CausalLM().Trainers.Pretrain(options).Fit(Docs()));
        Assert.Contains("reads column 'Ids', which the input does not have", e.Message);
    }

    [Fact]
    public void StopsByTokensOrByEpochs()
    {
        var byTokens = Options("tokens", b => { b.MaxSteps = 0; b.EvalFraction = 0; });
        using var tokens = new PretrainingEstimator(new PretrainingOptions
        {
            Tokenizer = byTokens.Tokenizer, Preset = "tiny", OutputDirectory = byTokens.OutputDirectory, BlockSize = 32, MicroBatchSize = 4,
            MaxTokens = 5 * 4 * 32, EvalFraction = 0, Threads = 1, Device = "cpu",
        }).Fit(Docs());
        Assert.Equal(5, tokens.Training!.Steps);
        Assert.Equal(5 * 4 * 32, tokens.Training.History[^1].Tokens);

        // Counted from the documents, not by the code under test: each document's tokens and its end of text, cut
        // into whole blocks of 32, four blocks a step, two epochs, the last step short.
        long tokenCount = Docs().GetColumn<string>("Text").Sum(text => byTokens.Tokenizer.Encode(text).Count + 1L);
        long blocks = tokenCount / 32;
        using var epochs = new PretrainingEstimator(new PretrainingOptions
        {
            Tokenizer = byTokens.Tokenizer, Preset = "tiny", OutputDirectory = Path.Combine(_dir.Path, "epochs"), BlockSize = 32, MicroBatchSize = 4,
            Epochs = 2, EvalFraction = 0, Threads = 1, Device = "cpu",
        }).Fit(Docs());
        Assert.Equal((int)Math.Ceiling(2 * blocks / 4.0), epochs.Training!.Steps);
        Assert.Equal(1, epochs.Training.History[^1].Epoch);
    }

    [Fact]
    public void ResumingWithOtherOptionsIsRefused()
    {
        var first = Options("first", b => { b.MaxSteps = 4; b.CheckpointInterval = 2; b.EvalFraction = 0; });
        using var _ = new PretrainingEstimator(first).Fit(Docs());
        var longer = Options("longer", b => { b.MaxSteps = 8; b.EvalFraction = 0; b.ResumeFrom = first.OutputDirectory; });
        var e = Assert.Throws<ArgumentException>(() => new PretrainingEstimator(longer).Fit(Docs()));
        Assert.Contains("was written by a run of 4 steps, seed 0, shuffle window 256; these options give 8 steps", e.Message);
    }

    [Fact]
    public void HeldOutExamplesStopAtTheLimitAndIdsMustFitTheVocabulary()
    {
        var rows = Enumerable.Range(0, 100).Select(i => new IdsRow { Ids = [1, 2, i % 50] }).ToList();
        var examples = new TrainingExamples(_ml.Data.LoadFromEnumerable(rows), "Ids", null, evalFraction: 0.1, maxEvalExamples: 3, vocabSize: 64);
        Assert.Equal(3, examples.EvalExamples.Count);
        Assert.Equal(97, examples.ExamplesPerEpoch);

        rows.Add(new IdsRow { Ids = [1, 70] });
        var e = Assert.Throws<InvalidDataException>(() => new TrainingExamples(_ml.Data.LoadFromEnumerable(rows), "Ids", null, 0, 0, vocabSize: 64));
        Assert.Equal("Row 100 of column 'Ids' holds token id 70, outside the model's vocabulary of 64.", e.Message);
    }

    sealed class IdsRow
    {
        [VectorType] public int[] Ids { get; set; } = [];
    }

    [Fact]
    public void BadOptionsAndInputsAreNamed()
    {
        var noStop = Assert.Throws<ArgumentException>(() => new PretrainingEstimator(Options("x", b => b.MaxSteps = 0)));
        Assert.Contains("Say when to stop", noStop.Message);
        var keep = Assert.Throws<ArgumentOutOfRangeException>(() => new PretrainingEstimator(Options("k", b => b.Keep = 0)));
        Assert.Contains("KeepLastCheckpoints must be positive", keep.Message);
        var estimator = new PretrainingEstimator(Options("y"));
        var column = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(new DataFrame(new StringDataFrameColumn("Body", ["x"]))));
        Assert.Contains("Pretraining reads column 'Text', which the input does not have. Input columns: 'Body'", column.Message);
        var tooShort = Assert.Throws<InvalidDataException>(() => estimator.Fit(Texts("hi")));
        Assert.Contains("no training sequences", tooShort.Message);
    }
}
