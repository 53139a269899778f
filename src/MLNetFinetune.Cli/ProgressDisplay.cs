using MLNetFinetune.PairGathering;
using MLNetFinetune.TorchSharp.Training;
using Spectre.Console;

namespace MLNetFinetune.Cli;

/// <summary>
/// Shows progress on long work: a live bar with ETA (training: loss and tokens/s; gathering pairs: pairs/s and rejects)
/// when the output is an interactive terminal, plain lines (one per log interval or batch) when it is redirected or
/// captured, so logs and CI output stay readable.
/// </summary>
static class ProgressDisplay
{
    public static bool IsTerminal(TextWriter output) =>
        ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs <paramref name="train"/>, handing it the progress sink that fits <paramref name="output"/>.</summary>
    public static T Train<T>(TextWriter output, string title, Func<IProgress<TrainingProgress>, T> train)
    {
        if (!IsTerminal(output)) return train(new Lines<TrainingProgress>(output));
        T result = default!;
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(context =>
            {
                var task = context.AddTask(Markup.Escape(title));
                result = train(new Bar(task, title));
                task.Value = task.MaxValue;
            });
        return result;
    }

    /// <summary>Runs a pair-gathering <paramref name="work"/>, handing it the progress sink that fits <paramref name="output"/>.</summary>
    public static async Task<T> Gather<T>(TextWriter output, string title, Func<IProgress<PairGatheringProgress>, Task<T>> work)
    {
        if (!IsTerminal(output)) return await work(new Lines<PairGatheringProgress>(output));
        T result = default!;
        await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .StartAsync(async context =>
            {
                var task = context.AddTask(Markup.Escape(title));
                result = await work(new PairsBar(task, title));
                task.Value = task.MaxValue;
            });
        return result;
    }

    /// <summary>Runs <paramref name="work"/> under a spinner (terminal) and says how long it took.</summary>
    public static T Timed<T>(TextWriter output, string title, Func<T> work)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        T result = IsTerminal(output) ? AnsiConsole.Status().Start(Markup.Escape(title + " …"), _ => work()) : work();
        output.WriteLine(FormattableString.Invariant($"{title}: {clock.Elapsed.TotalSeconds:F1} s"));
        return result;
    }

    /// <summary>Progress as plain lines, one per report.</summary>
    internal sealed class Lines<TProgress>(TextWriter output) : IProgress<TProgress>
    {
        public void Report(TProgress value) => output.WriteLine(value);
    }

    sealed class Bar(ProgressTask task, string title) : IProgress<TrainingProgress>
    {
        double? _evalLoss;

        public void Report(TrainingProgress p)
        {
            _evalLoss = p.EvalLoss ?? _evalLoss;
            task.MaxValue = Math.Max(1, p.TotalSteps);
            task.Value = p.Step;
            string eval = _evalLoss is { } e ? $"  eval {e:F3}" : "";
            task.Description = Markup.Escape($"{title}  step {p.Step}/{p.TotalSteps}  loss {p.Loss:F3}{eval}  {p.TokensPerSecond:N0} tok/s");
        }
    }

    // Spectre's own column estimates the time left from the bar's pace; the description adds pairs/s and rejects.
    sealed class PairsBar(ProgressTask task, string title) : IProgress<PairGatheringProgress>
    {
        public void Report(PairGatheringProgress p)
        {
            task.MaxValue = Math.Max(1, p.Total);
            task.Value = p.Done;
            task.Description = Markup.Escape(FormattableString.Invariant($"{title}  {p.Done}/{p.Total}  {p.Kept} kept  {p.Rejected} rejected  {p.PairsPerSecond:F2} pairs/s"));
        }
    }
}
