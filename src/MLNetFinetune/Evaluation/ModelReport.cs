using System.Globalization;
using System.Text;
using CsvHelper;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Evaluation;

/// <summary>One row of a report: the question, the expected answer, the model's answer and whether it matched.</summary>
public sealed record ReportRow(string Question, string Expected, string Answer, bool Exact);

/// <summary>
/// One model on a set of rows: its metrics and every answer, for reading as the course's error analysis does. The
/// single-model counterpart of <see cref="ModelComparison"/>, written in the same Markdown and CSV shapes.
/// </summary>
public sealed record ModelReport(string Name, GenerationMetrics Metrics, IReadOnlyList<ReportRow> Rows)
{
    /// <summary>
    /// Reads a scored view: <paramref name="questionColumn"/>, the labels, the generated answers and (when present) the
    /// losses; the generated answers are read in one pass.
    /// </summary>
    public static ModelReport Create(IDataView scored, string questionColumn, string labelColumn, string generatedColumn = "Generated",
        string lossColumn = "Loss", AnswerNormalization? normalization = null, string name = "model")
    {
        normalization ??= new AnswerNormalization();
        SchemaShapes.RequireText(scored.Schema, questionColumn, "Report");
        var questions = scored.GetColumn<ReadOnlyMemory<char>>(questionColumn).Select(v => v.ToString()).ToList();
        var answers = GenerationEvaluator.ReadAnswers(scored, labelColumn, generatedColumn, lossColumn);
        var rows = answers.Select((a, i) => new ReportRow(questions[i], a.Expected, a.Generated, a.IsExact(normalization))).ToList();
        return new ModelReport(name, GenerationEvaluator.Score(answers, normalization), rows);
    }

    /// <summary>Metrics table and answers table as Markdown.</summary>
    public string ToMarkdown()
    {
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"| metric | {Name} |").AppendLine("| --- | --- |");
        sb.AppendLine($"| exact match | {Metrics.ExactMatch} |");
        sb.AppendLine(string.Create(c, $"| token F1 | {Metrics.TokenF1:F3} |"));
        if (Metrics.MeanLoss != null)
        {
            sb.AppendLine(string.Create(c, $"| loss | {Metrics.MeanLoss:F3} |"));
            sb.AppendLine(string.Create(c, $"| perplexity | {Metrics.Perplexity:F2} |"));
        }
        sb.AppendLine().AppendLine($"| question | expected | {Name} |").AppendLine("| --- | --- | --- |");
        foreach (var r in Rows)
            sb.AppendLine($"| {Cell(r.Question)} | {Cell(r.Expected)} | {(r.Exact ? "✓ " : "")}{Cell(r.Answer)} |");
        return sb.ToString();
    }

    static string Cell(string text) => text.ReplaceLineEndings(" ").Replace("|", "\\|").Trim();

    /// <summary>Writes the Markdown report, atomically.</summary>
    public void WriteMarkdown(string path) => DataFiles.WriteAtomically(path, s =>
    {
        using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
        w.Write(ToMarkdown());
    });

    /// <summary>Writes the rows as CSV (question, expected, answer, exact-match flag), atomically.</summary>
    public void WriteCsv(string path) => DataFiles.WriteAtomically(path, s =>
    {
        using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
        using var csv = new CsvWriter(w, CultureInfo.InvariantCulture);
        csv.WriteField("question"); csv.WriteField("expected"); csv.WriteField($"{Name}_answer"); csv.WriteField($"{Name}_exact");
        csv.NextRecord();
        foreach (var r in Rows)
        {
            csv.WriteField(r.Question); csv.WriteField(r.Expected); csv.WriteField(r.Answer); csv.WriteField(r.Exact);
            csv.NextRecord();
        }
    });
}
