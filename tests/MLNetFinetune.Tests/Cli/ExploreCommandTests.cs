using MLNetFinetune.Data;

namespace MLNetFinetune.Tests.Cli;

public class ExploreCommandTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static (int Code, string Out, string Err) Run(params string[] args) => CliRunner.Run(args);

    [Fact]
    public void ShowsCorpusAndPairsAndWritesTheRenderedPairs()
    {
        string corpus = _dir.File("c.jsonl", "{\"text\":\"First document.\",\"meta\":{\"pile_set_name\":\"Pile-CC\"}}\n{\"text\":\"Second.\",\"meta\":{\"pile_set_name\":\"Github\"}}\n");
        string pairs = _dir.File("p.jsonl", "{\"question\":\"Q1?\",\"answer\":\"A1.\"}\n");
        string outPath = Path.Combine(_dir.Path, "processed.jsonl");

        var (code, stdout, stderr) = Run("explore", "--corpus", corpus, "--meta", "meta.pile_set_name", "--pairs", pairs, "-n", "1", "--out", outPath);

        Assert.Equal(0, code);
        Assert.Equal("", stderr);
        Assert.Contains("[0] meta.pile_set_name=Pile-CC  First document.", stdout);
        Assert.DoesNotContain("Second.", stdout);
        Assert.Contains("pairs: 1 rows, layout QuestionAnswer (question, answer)", stdout);
        Assert.Contains("### Question:\n      Q1?", stdout.ReplaceLineEndings("\n"));
        var written = InstructionData.LoadJsonl(outPath);
        Assert.Equal(["question", "answer"], written.Columns.Select(c => c.Name)); // the loader keeps the layout's fields
        Assert.Contains("\"prompt\":\"### Question:\\nQ1?\\n\\n### Answer:\"", File.ReadAllText(outPath));
    }

    [Fact]
    public void ErrorsAreOneLineWithANonZeroExitCodeAndVerboseAddsTheStackTrace()
    {
        string bad = _dir.File("bad.jsonl", "{\"question\": \"Q1\", \"answer\": \"A1\"}\n{\"question\": \"Q2\"}\n");
        var (code, _, stderr) = Run("explore", "--pairs", bad);
        Assert.Equal(1, code);
        Assert.Equal($"error: {bad}:2: missing field 'answer' (the record has: question)", stderr.Trim());

        var (verboseCode, _, verboseErr) = Run("explore", "--pairs", bad, "--verbose");
        Assert.Equal(1, verboseCode);
        Assert.Contains("at MLNetFinetune.Data.InstructionData", verboseErr);

        var (noArgs, _, noArgsErr) = Run("explore");
        Assert.Equal(1, noArgs);
        Assert.Equal("error: Give --corpus, --pairs or both.", noArgsErr.Trim());
    }
}
