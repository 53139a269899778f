using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
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
        var sb = new StringBuilder();
        ReportFiles.AppendMetrics(sb, [(Name, Metrics)]);
        sb.AppendLine().AppendLine($"| question | expected | {Name} |").AppendLine("| --- | --- | --- |");
        foreach (var r in Rows)
            sb.AppendLine($"| {ReportFiles.Cell(r.Question)} | {ReportFiles.Cell(r.Expected)} | {ReportFiles.Answer(r.Answer, r.Exact)} |");
        return sb.ToString();
    }

    /// <summary>Writes the Markdown report, atomically.</summary>
    public void WriteMarkdown(string path) => ReportFiles.WriteText(path, ToMarkdown());

    /// <summary>Writes the rows as CSV (question, expected, answer, exact-match flag), atomically.</summary>
    public void WriteCsv(string path) => ReportFiles.WriteCsv(path, ["question", "expected", $"{Name}_answer", $"{Name}_exact"],
        Rows.Select(r => (IReadOnlyList<object>)[r.Question, r.Expected, r.Answer, r.Exact]));
}
