using System.Diagnostics;
using Microsoft.ML.Runtime;
using MLNetFinetune.Distributed;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>What a training run produced.</summary>
/// <param name="Steps">Optimizer steps made (in total, across resumes).</param>
/// <param name="History">The metrics history.</param>
/// <param name="BestEvalLoss">The lowest held-out loss seen, if evaluation was on.</param>
/// <param name="LastCheckpoint">The newest checkpoint folder.</param>
/// <param name="BestCheckpoint">The checkpoint with the lowest eval loss, when evaluation was on.</param>
/// <param name="StoppedEarly">True when early stopping ended the run before its last step.</param>
/// <param name="TrainingTime">Wall time of this run's steps (evaluation and checkpoints included).</param>
/// <param name="GradientReductionTime">Data parallel: of that, the time spent all-reducing gradients; null for one process.</param>
public sealed record TrainingResult(int Steps, IReadOnlyList<MetricRow> History, double? BestEvalLoss, string LastCheckpoint, string? BestCheckpoint, bool StoppedEarly,
    TimeSpan TrainingTime = default, TimeSpan? GradientReductionTime = null);

/// <summary>
/// The training loop every stage shares (pretraining now, instruction finetuning on the same loop): micro-batches
/// with gradient accumulation, AdamW without decay on biases and norms, warmup + cosine schedule, gradient
/// clipping, periodic evaluation, atomic checkpoints with exact resume, progress and a metrics history.
/// </summary>
public static class CausalLMTrainer
{
    /// <summary>Trains <paramref name="model"/> in place and returns the history.</summary>
    public static TrainingResult Train(TransformerForCausalLM model, TextTokenizer tokenizer, TrainingExamples data,
        CausalLMTrainingOptions options, IChannelProvider? log = null)
    {
        options.Validate();
        TorchRuntime.SetThreads(options.Threads);
        var device = TorchRuntime.ResolveDevice(options.Device);
        model.to(device);
        model.ComputeType = options.ComputeType;
        try
        {
            return Run(model, tokenizer, data, options, log, device);
        }
        finally
        {
            model.ComputeType = null; // checkpoints and later inference are float32
        }
    }

    static TrainingResult Run(TransformerForCausalLM model, TextTokenizer tokenizer, TrainingExamples data, CausalLMTrainingOptions options,
        IChannelProvider? log, Device device)
    {
        int padId = tokenizer.PadId ?? 0;
        var parallel = options.ProcessGroup is { WorldSize: > 1 } processGroup ? new DataParallel(processGroup) : null;
        int world = parallel?.WorldSize ?? 1;
        bool writes = options.WritesFiles; // rank 0 alone writes checkpoints, metrics and progress
        int perStep = options.MicroBatchSize * options.GradientAccumulationSteps * world;
        int totalSteps = TotalSteps(options, data.ExamplesPerEpoch, perStep);
        bool permutes = data.Permutes(options.ShuffleBuffer);

        var trainable = model.TrainableParameters().ToList();
        var groups = new List<AdamW.ParamGroup>
        {
            new(trainable.Where(p => p.dim() >= 2), options.LearningRate, options.Beta1, options.Beta2, options.Epsilon, options.WeightDecay, false, false),
        };
        if (trainable.Any(p => p.dim() < 2))
            groups.Add(new(trainable.Where(p => p.dim() < 2), options.LearningRate, options.Beta1, options.Beta2, options.Epsilon, 0, false, false));
        // Built after the model moved to its device: the flat optimizer makes the parameters views of its buffers.
        using var optimizer = TrainingOptimizer.Create(options.Optimizer, trainable, groups, device, parallel != null);

        var history = new List<MetricRow>();
        int step = 0, epoch = 0;
        long inEpoch = 0, tokens = 0;
        double? bestEval = null;
        string? lastCheckpoint = null;
        if (options.ResumeFrom != null)
        {
            lastCheckpoint = TrainingCheckpoint.Resolve(options.ResumeFrom);
            var state = TrainingCheckpoint.ReadState(lastCheckpoint);
            // Resuming continues the same run: the schedule and the data order must be the ones the checkpoint used.
            if (state.WorldSize != world)
                throw new ArgumentException($"{lastCheckpoint} was written by a run of {state.WorldSize} process{(state.WorldSize == 1 ? "" : "es")}; this one has {world}. " +
                    "Resume with the same world size (a step's examples are split across the ranks, and the data order depends on it).");
            if (state.TotalSteps != totalSteps || state.Seed != options.Seed || state.FullShuffle != permutes || (!permutes && state.ShuffleBuffer != options.ShuffleBuffer)
                || (permutes && state.LengthGroup != options.LengthGroup))
                throw new ArgumentException($"{lastCheckpoint} was written by a run of {state.TotalSteps} steps, seed {state.Seed}, {Order(state.FullShuffle, state.ShuffleBuffer, state.LengthGroup)}; " +
                    $"these options give {totalSteps} steps, seed {options.Seed}, {Order(permutes, options.ShuffleBuffer, options.LengthGroup)}. Resume with the options (and data) of that run" +
                    (permutes && !state.FullShuffle ? " (InMemoryShuffleRows = 0 keeps the window shuffle, as runs before full shuffling used)." : "."));
            TrainingCheckpoint.LoadWeights(lastCheckpoint, model);
            TrainingCheckpoint.LoadOptimizer(lastCheckpoint, optimizer);
            TrainingCheckpoint.RestoreRng(state.TorchRngState);
            (step, epoch, inEpoch, tokens, bestEval) = (state.Step, state.Epoch, state.ExamplesInEpoch, state.Tokens, state.BestEvalLoss);
            history.AddRange(state.History);
            if (writes) Report(log, $"resumed from {lastCheckpoint} at step {step}");
        }
        if (parallel != null)
        {
            // Ranks that read different data (a corpus changed under one of them) would train on mismatched steps.
            parallel.Group.RequireSame(BitConverter.GetBytes(data.ExamplesPerEpoch).Concat(BitConverter.GetBytes((long)data.EvalExamples.Count)).ToArray(), "training data (examples per epoch and held-out count)");
            parallel.BroadcastWeights(model);
            if (writes) Report(log, $"data parallel over {world} ranks ({parallel.Group.Backend}): weights broadcast from rank 0 and verified");
        }

        int firstStep = step;
        using var examples = Stream(data, options, epoch, inEpoch).GetEnumerator();
        var clock = Stopwatch.StartNew();
        var intervalClock = Stopwatch.StartNew();
        double intervalLoss = 0;
        long intervalTokens = 0;
        int intervalSteps = 0;
        double gradNorm = 0;
        var micro = new List<TrainingExample>(options.MicroBatchSize);
        var batches = new List<TrainingBatch>(options.GradientAccumulationSteps);
        string metricsPath = Path.Combine(options.OutputDirectory, "metrics.csv");
        if (writes) Directory.CreateDirectory(options.OutputDirectory);

        int evalsWithoutImprovement = 0;
        bool stoppedEarly = false;
        string? bestCheckpoint = bestEval != null ? Path.Combine(TrainingCheckpoint.Folder(options.OutputDirectory), "best") : null;
        while (step < totalSteps && !stoppedEarly)
        {
            model.train();
            double lr = LearningRateSchedule.At(step, totalSteps, options.LearningRate, options.FinalLearningRate, options.WarmupSteps);
            foreach (var group in optimizer.ParamGroups) group.LearningRate = lr;
            double stepLoss;
            for (int m = 0; m < options.GradientAccumulationSteps; m++)
            {
                // A global micro-batch is world × MicroBatchSize consecutive examples of the one stream all ranks
                // follow; rank r trains on the r-th slice, so every rank knows where the data stands (for checkpoints).
                micro.Clear();
                for (int taken = 0; taken < options.MicroBatchSize * world; taken++)
                {
                    examples.MoveNext();
                    if (taken / options.MicroBatchSize == (parallel?.Rank ?? 0)) micro.Add(examples.Current.Example.Read());
                    (epoch, inEpoch) = (examples.Current.Epoch, examples.Current.InEpoch);
                }
                batches.Add(TrainingExamples.Collate(micro, padId, device));
            }
            // Every labelled target of the step weighs the same, however the micro-batches (and ranks) split them (a mean
            // per micro-batch would overweight short ones), and training and evaluation losses mean the same thing.
            Span<long> counts = [batches.Sum(b => b.Targets), batches.Sum(b => b.Tokens)];
            parallel?.Group.AllReduceSum(counts, $"the all-reduce of target counts at step {step + 1}");
            long stepTargets = counts[0];
            tokens += counts[1];
            intervalTokens += counts[1];
            using (var scope = NewDisposeScope())
            {
                var lossSum = zeros(1, float64, device);
                using var targets = ((double)stepTargets).ToScalar(); // held through the calls (see Scalars)
                foreach (var batch in batches)
                {
                    var loss = batch.LossSum(model);
                    loss.div(targets).backward();
                    lossSum.add_(loss.detach(), Scalars.One);
                }
                Span<double> sum = [lossSum.item<double>()];
                parallel?.Group.AllReduceSum(sum, $"the all-reduce of the loss at step {step + 1}");
                stepLoss = sum[0] / stepTargets;
            }
            foreach (var batch in batches) batch.Dispose();
            batches.Clear();
            parallel?.AllReduceGradients(optimizer, trainable, step + 1);
            // An infinite norm clips to NaN weights, so check it before the optimizer moves anything.
            gradNorm = optimizer.ClipGradNorm(options.GradientClipNorm > 0 ? options.GradientClipNorm : double.PositiveInfinity);
            if (!double.IsFinite(stepLoss) || !double.IsFinite(gradNorm))
                throw new TrainingDivergedException($"The training {(double.IsFinite(stepLoss) ? $"gradient norm is {gradNorm}" : $"loss is {stepLoss}")} at step {step + 1}. " +
                    "The last good checkpoint is " + (lastCheckpoint ?? "none (no checkpoint was written yet)") + "; resume from it with a lower LearningRate or stronger clipping.");
            optimizer.step();
            optimizer.zero_grad();
            step++;
            intervalLoss += stepLoss;
            intervalSteps++;

            bool evaluate = data.EvalExamples.Count > 0 && (step % options.EvalInterval == 0 || step == totalSteps);
            bool logNow = step % options.LogInterval == 0 || step == totalSteps || evaluate;
            if (logNow)
            {
                double? evalLoss = evaluate ? Evaluate(model, data.EvalExamples, options.MicroBatchSize, padId, device, parallel) : null;
                double seconds = intervalClock.Elapsed.TotalSeconds;
                double tokensPerSecond = intervalTokens / Math.Max(seconds, 1e-9);
                var eta = TimeSpan.FromSeconds(clock.Elapsed.TotalSeconds / (step - firstStep) * (totalSteps - step));
                var row = new MetricRow(step, epoch, tokens, intervalLoss / intervalSteps, lr, gradNorm, tokensPerSecond, evalLoss, clock.Elapsed.TotalSeconds);
                history.Add(row);
                if (writes)
                {
                    var progress = new TrainingProgress(step, totalSteps, epoch, tokens, row.Loss, lr, gradNorm, tokensPerSecond, eta, evalLoss);
                    options.Progress?.Report(progress);
                    Report(log, progress.ToString());
                    TrainingCheckpoint.WriteMetrics(metricsPath, history);
                }
                (intervalLoss, intervalTokens, intervalSteps) = (0, 0, 0);
                intervalClock.Restart();

                if (evalLoss is { } e && (bestEval == null || e < bestEval))
                {
                    bestEval = e;
                    evalsWithoutImprovement = 0;
                    bestCheckpoint = Path.Combine(TrainingCheckpoint.Folder(options.OutputDirectory), "best");
                    if (writes) TrainingCheckpoint.Write(bestCheckpoint, model, tokenizer, optimizer, State(step, totalSteps, epoch, inEpoch, tokens, bestEval, options, permutes, history, world));
                }
                else if (evalLoss != null && options.EarlyStoppingPatience > 0 && ++evalsWithoutImprovement >= options.EarlyStoppingPatience)
                {
                    stoppedEarly = true;
                    if (writes) Report(log, $"early stopping at step {step}: no better eval loss than {bestEval:F4} in {evalsWithoutImprovement} evaluations");
                }
            }
            if ((options.CheckpointInterval > 0 && step % options.CheckpointInterval == 0) || step == totalSteps || stoppedEarly)
            {
                lastCheckpoint = Path.Combine(TrainingCheckpoint.Folder(options.OutputDirectory), $"step-{step:D7}");
                if (writes)
                {
                    TrainingCheckpoint.Write(lastCheckpoint, model, tokenizer, optimizer, State(step, totalSteps, epoch, inEpoch, tokens, bestEval, options, permutes, history, world));
                    TrainingCheckpoint.Prune(options.OutputDirectory, options.KeepLastCheckpoints);
                }
            }
        }
        // Ranks that read a checkpoint next (the best one, restored) wait until rank 0 has written it.
        parallel?.Group.Barrier("the barrier after the last checkpoint");
        return new TrainingResult(step, history, bestEval, lastCheckpoint!, bestCheckpoint, stoppedEarly, clock.Elapsed, parallel?.ReductionTime);
    }

    /// <summary>Mean token loss over held-out examples (every labelled target counted once).</summary>
    public static double Evaluate(TransformerForCausalLM model, IReadOnlyList<TrainingExample> examples, int batchSize, int padId, Device device) =>
        Evaluate(model, examples, batchSize, padId, device, null);

    // Data parallel, each rank scores every world-th batch and the sums are added up.
    static double Evaluate(TransformerForCausalLM model, IReadOnlyList<TrainingExample> examples, int batchSize, int padId, Device device, DataParallel? parallel)
    {
        model.eval();
        using var _ = no_grad();
        double sum = 0;
        long count = 0;
        int world = parallel?.WorldSize ?? 1, rank = parallel?.Rank ?? 0;
        for (int start = rank * batchSize; start < examples.Count; start += batchSize * world)
        {
            using var scope = NewDisposeScope();
            var batch = TrainingExamples.Collate(examples.Skip(start).Take(batchSize).ToList(), padId, device);
            sum += batch.LossSum(model).item<float>();
            count += batch.Targets;
        }
        if (parallel != null)
        {
            Span<double> totals = [sum, count];
            parallel.Group.AllReduceSum(totals, "the all-reduce of the evaluation loss");
            (sum, count) = (totals[0], (long)totals[1]);
        }
        return sum / Math.Max(1, count);
    }

    static int TotalSteps(CausalLMTrainingOptions o, long examplesPerEpoch, int perStep)
    {
        var limits = new List<long>();
        if (o.MaxSteps > 0) limits.Add(o.MaxSteps);
        if (o.MaxTokens > 0) limits.Add((o.MaxTokens + (long)perStep * o.BlockSize - 1) / ((long)perStep * o.BlockSize));
        if (o.Epochs > 0) limits.Add((o.Epochs * examplesPerEpoch + perStep - 1) / perStep);
        return (int)Math.Max(1, limits.Min());
    }

    // An endless stream across epochs, starting at (epoch, inEpoch) for a resumed run.
    static IEnumerable<(PendingExample Example, int Epoch, long InEpoch)> Stream(TrainingExamples data, CausalLMTrainingOptions o, int epoch, long skip)
    {
        for (; ; epoch++, skip = 0)
        {
            long index = 0;
            foreach (var example in data.Order(epoch, o.Seed, o.ShuffleBuffer, o.GroupByLength ? o.MicroBatchSize : 0))
            {
                if (index++ < skip) continue;
                yield return (example, epoch, index);
            }
        }
    }

    static TrainerState State(int step, int totalSteps, int epoch, long inEpoch, long tokens, double? bestEval, CausalLMTrainingOptions o, bool permutes,
        List<MetricRow> history, int world) =>
        new(step, totalSteps, epoch, inEpoch, tokens, bestEval, o.Seed, o.ShuffleBuffer, permutes, TrainingCheckpoint.CaptureRng(), history.ToList(), permutes ? o.LengthGroup : 0, world);

    static string Order(bool permutes, int window, int lengthGroup) =>
        !permutes ? $"shuffle window {window}" : lengthGroup > 0 ? $"a full shuffle in memory, sorted by length in groups of {lengthGroup}" : "a full shuffle in memory";

    static void Report(IChannelProvider? log, string message)
    {
        if (log == null) return;
        using var channel = log.Start("CausalLM");
        channel.Info(MessageSensitivity.None, message);
    }
}
