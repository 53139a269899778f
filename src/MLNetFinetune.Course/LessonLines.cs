using System.Diagnostics;
using System.Globalization;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Course;

/// <summary>A lesson's long work as plain lines, for callers without a display of their own (tests, programs).</summary>
sealed class LessonLines(TextWriter output) : ILessonDisplay
{
    public T Train<T>(string title, Func<IProgress<TrainingProgress>, T> train) => train(new Progress(output));

    public T Timed<T>(string title, Func<T> work)
    {
        var clock = Stopwatch.StartNew();
        T result = work();
        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{title}: {clock.Elapsed.TotalSeconds:F1} s"));
        return result;
    }

    public string? PlotLoss(string runDirectory, string title) => null;

    sealed class Progress(TextWriter output) : IProgress<TrainingProgress>
    {
        public void Report(TrainingProgress value) => output.WriteLine(value);
    }
}
