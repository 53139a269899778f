using System.Globalization;

namespace MLNetFinetune.Cli;

/// <summary>Draws a run's <c>metrics.csv</c> (train and eval loss against step) as <c>loss.png</c> beside it.</summary>
static class LossPlot
{
    /// <summary>Writes <c>loss.png</c> in <paramref name="runDirectory"/>; returns its path, or null when the run logged no steps.</summary>
    public static string? Write(string runDirectory, string title)
    {
        string metrics = Path.Combine(runDirectory, "metrics.csv");
        if (!File.Exists(metrics)) return null;
        // metrics.csv is the trainer's own unquoted numeric table, so a split is a complete parser for it.
        var lines = File.ReadAllLines(metrics);
        var header = lines[0].Split(',');
        int step = Array.IndexOf(header, "step"), loss = Array.IndexOf(header, "loss"), eval = Array.IndexOf(header, "eval_loss");
        var train = new List<(double, double)>();
        var held = new List<(double, double)>();
        foreach (var line in lines.Skip(1))
        {
            var cells = line.Split(',');
            double x = double.Parse(cells[step], CultureInfo.InvariantCulture);
            if (double.TryParse(cells[loss], CultureInfo.InvariantCulture, out double y)) train.Add((x, y));
            if (eval >= 0 && double.TryParse(cells[eval], CultureInfo.InvariantCulture, out double e)) held.Add((x, e));
        }
        if (train.Count == 0) return null;
        var plot = new ScottPlot.Plot();
        var trainLine = plot.Add.ScatterLine(train.Select(p => p.Item1).ToArray(), train.Select(p => p.Item2).ToArray());
        trainLine.LegendText = "train loss";
        if (held.Count > 0)
        {
            var evalLine = plot.Add.Scatter(held.Select(p => p.Item1).ToArray(), held.Select(p => p.Item2).ToArray());
            evalLine.LegendText = "eval loss";
        }
        plot.Title(title);
        plot.XLabel("step");
        plot.YLabel("loss (nats/token)");
        plot.ShowLegend();
        string path = Path.Combine(runDirectory, "loss.png");
        plot.SavePng(path, 900, 500);
        return path;
    }
}
