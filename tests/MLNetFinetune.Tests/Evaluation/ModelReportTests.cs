using Microsoft.Data.Analysis;
using MLNetFinetune.Evaluation;

namespace MLNetFinetune.Tests.Evaluation;

public class ModelReportTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void ReportsOneModelsMetricsAndAnswersAsMarkdownAndCsv()
    {
        var scored = new DataFrame(
            new StringDataFrameColumn("question", ["Capital of Peru?", "Capital of\nChile?"]),
            new StringDataFrameColumn("answer", ["Lima", "Santiago"]),
            new StringDataFrameColumn("Generated", [" Lima", "Quito | no"]),
            new SingleDataFrameColumn("Loss", [1f, 3f]));

        var report = ModelReport.Create(scored, "question", "answer", name: "tuned");

        Assert.Equal(new Rate(1, 2), report.Metrics.ExactMatch);
        Assert.Equal(2.0, report.Metrics.MeanLoss);
        Assert.Equal([true, false], report.Rows.Select(r => r.Exact));
        string md = Path.Combine(_dir.Path, "out", "report.md");
        report.WriteMarkdown(md);
        report.WriteCsv(Path.ChangeExtension(md, ".csv"));
        string[] lines = File.ReadAllLines(md);
        Assert.Equal("| metric | tuned |", lines[0]);
        Assert.Contains("| exact match | 50.0% (1/2, 95% CI 9.5–90.5%) |", lines);
        Assert.Contains("| loss | 2.000 |", lines);
        Assert.Contains("| Capital of Peru? | Lima | ✓ Lima |", lines);
        Assert.Contains("| Capital of Chile? | Santiago | Quito \\| no |", lines);
        Assert.Equal("question,expected,tuned_answer,tuned_exact\nCapital of Peru?,Lima,\" Lima\",True\n\"Capital of\nChile?\",Santiago,Quito | no,False\n",
            File.ReadAllText(Path.ChangeExtension(md, ".csv")).ReplaceLineEndings("\n"));
    }
}
