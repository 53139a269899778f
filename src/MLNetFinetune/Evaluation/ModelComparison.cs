using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Evaluation;

/// <summary>One row of a comparison: the question, the expected answer and each model's answer.</summary>
public sealed record ComparisonRow(string Question, string Expected, string BaseAnswer, string TunedAnswer, bool BaseExact, bool TunedExact);

/// <summary>Two models on the same rows: metrics side by side and the answers, for reading as the course's error analysis does.</summary>
public sealed record ModelComparison(string BaseName, string TunedName, GenerationMetrics Base, GenerationMetrics Tuned, IReadOnlyList<ComparisonRow> Rows)
{
    /// <summary>
    /// Compares two scored views of the same rows (same order): <paramref name="questionColumn"/> is read from the
    /// first; the labels, generated answers and losses from each, each view read once.
    /// </summary>
    public static ModelComparison Compare(IDataView baseScored, IDataView tunedScored, string questionColumn, string labelColumn,
        string generatedColumn = "Generated", string lossColumn = "Loss", AnswerNormalization? normalization = null,
        string baseName = "base", string tunedName = "finetuned")
    {
        normalization ??= new AnswerNormalization();
        SchemaShapes.RequireText(baseScored.Schema, questionColumn, "Comparison");
        var questions = baseScored.GetColumn<ReadOnlyMemory<char>>(questionColumn).Select(v => v.ToString()).ToList();
        var baseAnswers = GenerationEvaluator.ReadAnswers(baseScored, labelColumn, generatedColumn, lossColumn);
        var tunedAnswers = GenerationEvaluator.ReadAnswers(tunedScored, labelColumn, generatedColumn, lossColumn);
        if (baseAnswers.Count != tunedAnswers.Count)
            throw new ArgumentException($"The two views have {baseAnswers.Count} and {tunedAnswers.Count} rows; compare the same rows.");
        var rows = questions.Select((q, i) => new ComparisonRow(q, baseAnswers[i].Expected, baseAnswers[i].Generated, tunedAnswers[i].Generated,
            baseAnswers[i].IsExact(normalization), tunedAnswers[i].IsExact(normalization))).ToList();
        return new ModelComparison(baseName, tunedName, GenerationEvaluator.Score(baseAnswers, normalization), GenerationEvaluator.Score(tunedAnswers, normalization), rows);
    }

    /// <summary>Metrics table and answers table as Markdown.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        ReportFiles.AppendMetrics(sb, [(BaseName, Base), (TunedName, Tuned)]);
        sb.AppendLine().AppendLine($"| question | expected | {BaseName} | {TunedName} |").AppendLine("| --- | --- | --- | --- |");
        foreach (var r in Rows)
            sb.AppendLine($"| {ReportFiles.Cell(r.Question)} | {ReportFiles.Cell(r.Expected)} | {ReportFiles.Answer(r.BaseAnswer, r.BaseExact)} | {ReportFiles.Answer(r.TunedAnswer, r.TunedExact)} |");
        return sb.ToString();
    }

    /// <summary>Writes the Markdown report, atomically.</summary>
    public void WriteMarkdown(string path) => ReportFiles.WriteText(path, ToMarkdown());

    /// <summary>Writes the rows as CSV (question, expected, both answers, exact-match flags), atomically.</summary>
    public void WriteCsv(string path) => ReportFiles.WriteCsv(path,
        ["question", "expected", $"{BaseName}_answer", $"{TunedName}_answer", $"{BaseName}_exact", $"{TunedName}_exact"],
        Rows.Select(r => (IReadOnlyList<object>)[r.Question, r.Expected, r.BaseAnswer, r.TunedAnswer, r.BaseExact, r.TunedExact]));
}
