using System.Globalization;
using System.Text;
using CsvHelper;
using MLNetFinetune.Data;

namespace MLNetFinetune.Evaluation;

/// <summary>The Markdown tables and files that <see cref="ModelReport"/> and <see cref="ModelComparison"/> share.</summary>
internal static class ReportFiles
{
    /// <summary>The metrics table: one column per model.</summary>
    public static void AppendMetrics(StringBuilder sb, IReadOnlyList<(string Name, GenerationMetrics Metrics)> models)
    {
        var c = CultureInfo.InvariantCulture;
        string Row(string metric, Func<GenerationMetrics, string> value) => $"| {metric} | {string.Join(" | ", models.Select(m => value(m.Metrics)))} |";
        sb.AppendLine($"| metric | {string.Join(" | ", models.Select(m => m.Name))} |").AppendLine($"|{string.Concat(Enumerable.Repeat(" --- |", models.Count + 1))}");
        sb.AppendLine(Row("exact match", m => m.ExactMatch.ToString()));
        sb.AppendLine(Row("token F1", m => m.TokenF1.ToString("F3", c)));
        if (models.Any(m => m.Metrics.MeanLoss != null))
        {
            sb.AppendLine(Row("loss", m => m.MeanLoss?.ToString("F3", c) ?? ""));
            sb.AppendLine(Row("perplexity", m => m.Perplexity?.ToString("F2", c) ?? ""));
        }
    }

    /// <summary>A table cell: one line, pipes escaped.</summary>
    public static string Cell(string text) => text.ReplaceLineEndings(" ").Replace("|", "\\|").Trim();

    /// <summary>An answer cell, marked when it matched.</summary>
    public static string Answer(string answer, bool exact) => (exact ? "✓ " : "") + Cell(answer);

    /// <summary>Writes text as UTF-8, atomically.</summary>
    public static void WriteText(string path, string text) => DataFiles.WriteAtomically(path, s =>
    {
        using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
        w.Write(text);
    });

    /// <summary>Writes a header and rows as CSV, atomically.</summary>
    public static void WriteCsv(string path, IReadOnlyList<string> header, IEnumerable<IReadOnlyList<object>> rows) => DataFiles.WriteAtomically(path, s =>
    {
        using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
        using var csv = new CsvWriter(w, CultureInfo.InvariantCulture);
        foreach (string field in header) csv.WriteField(field);
        csv.NextRecord();
        foreach (var row in rows)
        {
            foreach (object field in row) csv.WriteField(field);
            csv.NextRecord();
        }
    });
}
