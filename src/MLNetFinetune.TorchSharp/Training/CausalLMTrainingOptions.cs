using MLNetFinetune.Distributed;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>
/// Options shared by pretraining and finetuning: the optimizer, the schedule, when to stop, evaluate and checkpoint.
/// Settable (as ML.NET's own options are), so shared settings can be applied to either trainer's options in one place.
/// </summary>
public abstract class CausalLMTrainingOptions
{
    /// <summary>Where checkpoints, <c>metrics.csv</c> and the final model go. Required.</summary>
    public required string OutputDirectory { get; init; }

    /// <summary>Tokens per training sequence. Default 128.</summary>
    public int BlockSize { get; set; } = 128;

    /// <summary>Sequences per forward/backward pass. Default 8.</summary>
    public int MicroBatchSize { get; set; } = 8;

    /// <summary>Micro-batches whose gradients are summed before one optimizer step. Default 1.</summary>
    public int GradientAccumulationSteps { get; set; } = 1;

    /// <summary>Peak learning rate (AdamW). Default 3e-4.</summary>
    public double LearningRate { get; set; } = 3e-4;

    /// <summary>The floor the cosine decay ends at. Default (null): a tenth of <see cref="LearningRate"/>.</summary>
    public double? MinLearningRate { get; set; }

    /// <summary>The floor in use.</summary>
    internal double FinalLearningRate => MinLearningRate ?? LearningRate / 10;

    /// <summary>Steps of linear warmup from 0 to the peak. Default 20.</summary>
    public int WarmupSteps { get; set; } = 20;

    /// <summary>AdamW β1. Default 0.9.</summary>
    public double Beta1 { get; set; } = 0.9;

    /// <summary>AdamW β2. Default 0.95 (nanoGPT, Pythia).</summary>
    public double Beta2 { get; set; } = 0.95;

    /// <summary>AdamW ε. Default 1e-8.</summary>
    public double Epsilon { get; set; } = 1e-8;

    /// <summary>Decoupled weight decay, applied to matrices and embeddings, never to biases or LayerNorm. Default 0.1.</summary>
    public double WeightDecay { get; set; } = 0.1;

    /// <summary>Clip the gradient's global norm to this; 0 turns clipping off. Default 1.0.</summary>
    public double GradientClipNorm { get; set; } = 1.0;

    /// <summary>Stop after this many optimizer steps (0: no limit). At least one of steps, tokens or epochs must be set.</summary>
    public int MaxSteps { get; set; }

    /// <summary>Stop after this many training tokens (0: no limit).</summary>
    public long MaxTokens { get; set; }

    /// <summary>Stop after this many passes over the data (0: no limit).</summary>
    public int Epochs { get; set; }

    /// <summary>Fraction of the blocks held out for evaluation (every 1/fraction-th block). Default 0.05; 0 turns evaluation off.</summary>
    public double EvalFraction { get; set; } = 0.05;

    /// <summary>At most this many held-out blocks are kept and scored. Default 64.</summary>
    public int MaxEvalBlocks { get; set; } = 64;

    /// <summary>Evaluate every N steps (and at the end). Default 50.</summary>
    public int EvalInterval { get; set; } = 50;

    /// <summary>Stop when this many evaluations in a row bring no lower eval loss (0: off). Default 0.</summary>
    public int EarlyStoppingPatience { get; set; }

    /// <summary>Report progress every N steps (a report right after a resume averages only the steps since resuming). Default 10.</summary>
    public int LogInterval { get; set; } = 10;

    /// <summary>Write a checkpoint every N steps (0: only at the end). Default 100.</summary>
    public int CheckpointInterval { get; set; } = 100;

    /// <summary>How many step checkpoints to keep (the best by eval loss is kept besides). Default 2.</summary>
    public int KeepLastCheckpoints { get; set; } = 2;

    /// <summary>
    /// Streamed data (see <see cref="InMemoryShuffleRows"/>) is drawn at random from a window this large, deterministic per
    /// seed and epoch; 1 keeps data order, in memory too. Default 256.
    /// </summary>
    public int ShuffleBuffer { get; set; } = 256;

    /// <summary>
    /// Data whose view knows its row count, at most this many rows, is read once into memory and each epoch is a full
    /// permutation of it (seeded by seed and epoch, as Hugging Face's RandomSampler): no stretch of an epoch is drawn from one
    /// part of the file only. Larger or streamed data (row count unknown, e.g. a corpus read from disk) is shuffled within
    /// <see cref="ShuffleBuffer"/>. 0 always streams. Default 1,000,000.
    /// </summary>
    public int InMemoryShuffleRows { get; set; } = 1_000_000;

    /// <summary>
    /// With a full shuffle, sort each run of 10 micro-batches' worth of the permutation by length, so a micro-batch holds
    /// examples of similar length and pads little (Hugging Face's <c>group_by_length</c>). Default false.
    /// </summary>
    public bool GroupByLength { get; set; }

    /// <summary>Examples per length-sorted group (0: no grouping).</summary>
    internal int LengthGroup => GroupByLength ? TrainingExamples.BatchesPerLengthGroup * MicroBatchSize : 0;

    /// <summary><c>auto</c> (CUDA when TorchSharp sees a GPU, else CPU), <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; set; } = "auto";

    /// <summary>
    /// <c>float32</c> (default), or <c>bfloat16</c>: mixed precision, matrix products in bfloat16 on float32 master
    /// weights (for CUDA GPUs; it runs on CPU too, where it is rarely faster).
    /// </summary>
    public string DType { get; set; } = "float32";

    /// <summary>The compute type <see cref="DType"/> names; null for float32.</summary>
    internal global::TorchSharp.torch.ScalarType? ComputeType => DType.ToLowerInvariant() switch
    {
        "float32" or "fp32" => null,
        "bfloat16" or "bf16" => global::TorchSharp.torch.ScalarType.BFloat16,
        _ => throw new ArgumentException($"DType '{DType}' is not supported: use float32 or bfloat16."),
    };

    /// <summary>
    /// The AdamW implementation: <see cref="AdamWKind.Flat"/> (one set of kernels over flat buffers per step) or
    /// <see cref="AdamWKind.PerParameter"/> (TorchSharp's loop over parameters); the two agree to ~1e-6 and write the
    /// same checkpoints. Default <see cref="AdamWKind.Auto"/>: flat on CUDA and with data parallelism, else per-parameter.
    /// </summary>
    public AdamWKind Optimizer { get; set; } = AdamWKind.Auto;

    /// <summary>
    /// The data-parallel job this process is a rank of (<see cref="MpiProcessGroup.Join"/> under <c>mpirun</c>/<c>srun</c>);
    /// null trains alone. Every rank runs the same code with the same options: each takes its share of every step's
    /// examples (<see cref="MicroBatchSize"/> per rank and micro-batch, so a step sees MicroBatchSize × GradientAccumulationSteps ×
    /// world size examples), gradients are summed over the ranks, and only rank 0 writes checkpoints, metrics and progress.
    /// A run resumes with the world size it was started with.
    /// </summary>
    public IProcessGroup? ProcessGroup { get; set; }

    /// <summary>True on the process that writes the run's files: the only one, or rank 0.</summary>
    internal bool WritesFiles => ProcessGroup?.Rank is null or 0;

    /// <summary>libtorch intra-op threads; 0 keeps libtorch's default.</summary>
    public int Threads { get; set; }

    /// <summary>Seeds weights, data order and sampling. Default 0.</summary>
    public int Seed { get; set; }

    /// <summary>A checkpoint folder (or an output directory, meaning its latest checkpoint) to continue from.</summary>
    public string? ResumeFrom { get; set; }

    /// <summary>Receives progress every log interval and after each evaluation.</summary>
    public IProgress<TrainingProgress>? Progress { get; set; }

    internal virtual void Validate()
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(OutputDirectory);
        void Positive(int value, string name)
        {
            if (value <= 0) throw new ArgumentOutOfRangeException(name, $"{name} must be positive (got {value}).");
        }
        Positive(BlockSize, nameof(BlockSize));
        Positive(MicroBatchSize, nameof(MicroBatchSize));
        Positive(GradientAccumulationSteps, nameof(GradientAccumulationSteps));
        Positive(LogInterval, nameof(LogInterval));
        Positive(EvalInterval, nameof(EvalInterval));
        Positive(ShuffleBuffer, nameof(ShuffleBuffer));
        Positive(KeepLastCheckpoints, nameof(KeepLastCheckpoints));
        void NotNegative(double value, string name)
        {
            if (value < 0 || double.IsNaN(value)) throw new ArgumentOutOfRangeException(name, $"{name} must not be negative (got {value}).");
        }
        NotNegative(WarmupSteps, nameof(WarmupSteps));
        NotNegative(EarlyStoppingPatience, nameof(EarlyStoppingPatience));
        NotNegative(CheckpointInterval, nameof(CheckpointInterval));
        NotNegative(MaxEvalBlocks, nameof(MaxEvalBlocks));
        NotNegative(InMemoryShuffleRows, nameof(InMemoryShuffleRows));
        NotNegative(GradientClipNorm, nameof(GradientClipNorm));
        NotNegative(WeightDecay, nameof(WeightDecay));
        if (Beta1 is < 0 or >= 1 || Beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(Beta1), $"AdamW betas must be in [0, 1) (got {Beta1}, {Beta2}).");
        if (Epsilon <= 0) throw new ArgumentOutOfRangeException(nameof(Epsilon), "Epsilon must be positive.");
        if (MaxSteps <= 0 && MaxTokens <= 0 && Epochs <= 0)
            throw new ArgumentException("Say when to stop: set MaxSteps, MaxTokens or Epochs.");
        if (LearningRate <= 0 || FinalLearningRate < 0 || FinalLearningRate > LearningRate)
            throw new ArgumentOutOfRangeException(nameof(LearningRate), $"Need 0 ≤ MinLearningRate ({FinalLearningRate}) ≤ LearningRate ({LearningRate}), LearningRate > 0.");
        if (EvalFraction is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(EvalFraction), "EvalFraction must be in [0, 1).");
        _ = ComputeType;
    }
}

/// <summary>Training progress, reported every log interval and after each evaluation.</summary>
/// <param name="Step">Optimizer steps done.</param>
/// <param name="TotalSteps">Steps the run will make.</param>
/// <param name="Epoch">Current pass over the data (0-based).</param>
/// <param name="Tokens">Training tokens seen.</param>
/// <param name="Loss">Mean training loss over the last log interval.</param>
/// <param name="LearningRate">The current learning rate.</param>
/// <param name="GradientNorm">The gradient's global norm before clipping, last step.</param>
/// <param name="TokensPerSecond">Training throughput over the last interval.</param>
/// <param name="Eta">Estimated time to the end.</param>
/// <param name="EvalLoss">Held-out loss, when this report follows an evaluation.</param>
public sealed record TrainingProgress(int Step, int TotalSteps, int Epoch, long Tokens, double Loss, double LearningRate,
    double GradientNorm, double TokensPerSecond, TimeSpan Eta, double? EvalLoss)
{
    /// <summary>Perplexity of the held-out loss.</summary>
    public double? EvalPerplexity => EvalLoss is { } l ? Math.Exp(l) : null;

    /// <inheritdoc />
    public override string ToString() =>
        $"step {Step}/{TotalSteps}  loss {Loss:F4}  lr {LearningRate:E2}  {TokensPerSecond:N0} tok/s  ETA {Eta:hh\\:mm\\:ss}" +
        (EvalLoss is { } e ? $"  eval {e:F4} (ppl {Math.Exp(e):F1})" : "");
}

/// <summary>The loss became NaN or infinite.</summary>
public sealed class TrainingDivergedException(string message) : Exception(message);
