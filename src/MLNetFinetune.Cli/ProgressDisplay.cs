using MLNetFinetune.TorchSharp.Training;
using Spectre.Console;

namespace MLNetFinetune.Cli;

/// <summary>
/// Shows progress on long work: for training a live bar with loss, tokens/s and ETA when the output is an interactive
/// terminal, plain lines (one per log interval) when it is redirected or captured, so logs and CI output stay readable.
/// </summary>
static class ProgressDisplay
{
    static bool IsTerminal(TextWriter output) =>
        ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Runs <paramref name="train"/>, handing it the progress sink that fits <paramref name="output"/>.</summary>
    public static T Train<T>(TextWriter output, string title, Func<IProgress<TrainingProgress>, T> train)
    {
        if (!IsTerminal(output)) return train(new Lines(output));
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

    /// <summary>Runs <paramref name="work"/> under a spinner (terminal) and says how long it took.</summary>
    public static T Timed<T>(TextWriter output, string title, Func<T> work)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        T result = IsTerminal(output) ? AnsiConsole.Status().Start(Markup.Escape(title + " …"), _ => work()) : work();
        output.WriteLine(FormattableString.Invariant($"{title}: {clock.Elapsed.TotalSeconds:F1} s"));
        return result;
    }

    sealed class Lines(TextWriter output) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => output.WriteLine(value);
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
}
