using System.Globalization;
using System.Text;
using CsvHelper;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
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
        var c = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        sb.AppendLine($"| metric | {BaseName} | {TunedName} |").AppendLine("| --- | --- | --- |");
        sb.AppendLine($"| exact match | {Base.ExactMatch} | {Tuned.ExactMatch} |");
        sb.AppendLine(string.Create(c, $"| token F1 | {Base.TokenF1:F3} | {Tuned.TokenF1:F3} |"));
        if (Base.MeanLoss != null || Tuned.MeanLoss != null)
        {
            sb.AppendLine(string.Create(c, $"| loss | {Base.MeanLoss:F3} | {Tuned.MeanLoss:F3} |"));
            sb.AppendLine(string.Create(c, $"| perplexity | {Base.Perplexity:F2} | {Tuned.Perplexity:F2} |"));
        }
        sb.AppendLine().AppendLine($"| question | expected | {BaseName} | {TunedName} |").AppendLine("| --- | --- | --- | --- |");
        foreach (var r in Rows)
            sb.AppendLine($"| {Cell(r.Question)} | {Cell(r.Expected)} | {Mark(r.BaseExact)}{Cell(r.BaseAnswer)} | {Mark(r.TunedExact)}{Cell(r.TunedAnswer)} |");
        return sb.ToString();
    }

    static string Mark(bool exact) => exact ? "✓ " : "";

    static string Cell(string text) => text.ReplaceLineEndings(" ").Replace("|", "\\|").Trim();

    /// <summary>Writes the Markdown report, atomically.</summary>
    public void WriteMarkdown(string path) => DataFiles.WriteAtomically(path, s =>
    {
        using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
        w.Write(ToMarkdown());
    });

    /// <summary>Writes the rows as CSV (question, expected, both answers, exact-match flags), atomically.</summary>
    public void WriteCsv(string path) => DataFiles.WriteAtomically(path, s =>
    {
        using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true);
        using var csv = new CsvWriter(w, CultureInfo.InvariantCulture);
        csv.WriteField("question"); csv.WriteField("expected"); csv.WriteField($"{BaseName}_answer"); csv.WriteField($"{TunedName}_answer");
        csv.WriteField($"{BaseName}_exact"); csv.WriteField($"{TunedName}_exact");
        csv.NextRecord();
        foreach (var r in Rows)
        {
            csv.WriteField(r.Question); csv.WriteField(r.Expected); csv.WriteField(r.BaseAnswer); csv.WriteField(r.TunedAnswer);
            csv.WriteField(r.BaseExact); csv.WriteField(r.TunedExact);
            csv.NextRecord();
        }
    });
}
