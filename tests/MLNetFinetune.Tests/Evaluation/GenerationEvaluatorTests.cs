using Microsoft.Data.Analysis;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;

namespace MLNetFinetune.Tests.Evaluation;

public class GenerationEvaluatorTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static DataFrame Scored(string[] expected, string[] generated, float[]? loss = null)
    {
        var df = new DataFrame(new StringDataFrameColumn("answer", expected), new StringDataFrameColumn("Generated", generated));
        if (loss != null) df.Columns.Add(new SingleDataFrameColumn("Loss", loss));
        return df;
    }

    [Theory]
    [InlineData(false, false, 1)]
    [InlineData(true, false, 2)]
    [InlineData(true, true, 4)]
    public void ExactMatchFollowsTheNormalisation(bool ignoreCase, bool ignorePunctuation, int hits)
    {
        var scored = Scored(["Santiago", "Lima", "Accra", "New Delhi"], [" Santiago\n", "lima", "Accra.", "new  delhi!"]);
        var metrics = GenerationEvaluator.Evaluate(scored, "answer", lossColumn: null,
            normalization: new AnswerNormalization { IgnoreCase = ignoreCase, IgnorePunctuation = ignorePunctuation });
        Assert.Equal(hits, metrics.ExactMatch.Hits);
        Assert.Equal(4, metrics.ExactMatch.Count);
    }

    [Fact]
    public void TokenF1AndLossFollowTheirDefinitions()
    {
        Assert.Equal(1.0, GenerationEvaluator.TokenF1("the capital is Lima", "the capital is Lima"));
        Assert.Equal(2 * 0.5 * 1.0 / 1.5, GenerationEvaluator.TokenF1("Lima", "Lima city"), 10);
        Assert.Equal(0, GenerationEvaluator.TokenF1("Lima", "Quito"));
        var metrics = GenerationEvaluator.Evaluate(Scored(["a b", "c"], ["a b", "d"], [1f, 3f]), "answer");
        Assert.Equal(0.5, metrics.TokenF1, 10);
        Assert.Equal(2.0, metrics.MeanLoss);
        Assert.Equal(Math.Exp(2), metrics.Perplexity!.Value, 10);
        Assert.Contains("exact match 50.0% (1/2, 95% CI", metrics.ToString());
    }

    [Fact]
    public void WilsonIntervalsAreHonestAtTheEdges()
    {
        var none = new Rate(0, 12);
        Assert.Equal(0, none.Low);
        Assert.InRange(none.High, 0.24, 0.25); // 0 of 12 still allows about a quarter
        var all = new Rate(20, 20);
        Assert.Equal(1, all.High);
        Assert.InRange(all.Low, 0.83, 0.84);
        Assert.True(double.IsNaN(new Rate(0, 0).Value));
    }

    [Fact]
    public void MissingColumnsAreNamed()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => GenerationEvaluator.Evaluate(Scored(["a"], ["a"]), "expected"));
        Assert.Contains("Evaluation reads column 'expected', which the input does not have. Input columns: 'answer', 'Generated'", e.Message);
    }

    sealed class LengthScorer : ILogLikelihoodScorer
    {
        // Prefers the choice whose text is closest to the word "right", a stand-in for a model.
        public (double LogLikelihood, int Tokens) LogLikelihood(string context, string continuation) =>
            (continuation == "right" ? -1 : -5, 1);
    }

    [Fact]
    public void MultipleChoiceLoadsJsonlAndPicksTheMostLikelyChoice()
    {
        string path = _dir.File("mc.jsonl",
            "{\"question\": \"Q1\", \"choices\": [\"wrong\", \"right\"], \"answer\": 1}\n" +
            "{\"question\": \"Q2\", \"choices\": [\"right\", \"wrong\", \"wrong\"], \"answer\": 0}\n" +
            "{\"question\": \"Q3\", \"choices\": [\"right\", \"wrong\"], \"answer\": 1}\n");
        var items = MultipleChoiceEvaluator.LoadJsonl(path);
        var result = MultipleChoiceEvaluator.Evaluate(items, new LengthScorer());
        Assert.Equal([1, 0, 0], result.Predictions);
        Assert.Equal(2, result.Accuracy.Hits);

        string bad = _dir.File("bad.jsonl", "{\"question\": \"Q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}\n");
        var e = Assert.Throws<DataFileException>(() => MultipleChoiceEvaluator.LoadJsonl(bad));
        Assert.Equal($"{bad}:1: \"answer\" must be the index of a choice (0..1)", e.Message);
        string one = _dir.File("one.jsonl", "{\"question\": \"Q\", \"choices\": [\"a\"], \"answer\": 0}\n");
        Assert.Contains("at least two strings", Assert.Throws<DataFileException>(() => MultipleChoiceEvaluator.LoadJsonl(one)).Message);
    }
}

public class ClozeEvaluatorTests
{
    [Theory]
    [InlineData(" Paramaribo.\n\nThe capital", "Paramaribo", true)]
    [InlineData(" paramaribo", "Paramaribo", true)]
    [InlineData(" Paramaribos are", "Paramaribo", false)]
    [InlineData(" Parama", "Paramaribo", false)]
    [InlineData(" 290 protons", "29", false)]
    [InlineData(" the US Dollar", "US Dollar", false)]
    [InlineData(" US Dollar. People", "US Dollar", true)]
    public void HitsWhenTheContinuationNamesTheAnswerFirst(string continuation, string answer, bool hit) =>
        Assert.Equal(hit, MLNetFinetune.Evaluation.ClozeEvaluator.IsHit(continuation, answer));

    [Fact]
    public void RateCountsHits()
    {
        var items = new[] { new MLNetFinetune.Evaluation.ClozeItem("The capital of Peru is", "Lima"), new("The capital of Chile is", "Santiago") };
        var rate = MLNetFinetune.Evaluation.ClozeEvaluator.Evaluate(items, prompt => prompt.Contains("Peru") ? " Lima." : " Valparaíso.");
        Assert.Equal(new MLNetFinetune.Evaluation.Rate(1, 2), rate);
    }

    [Fact]
    public void ExactMatchIsBrokenDownByGroupInOrderOfFirstAppearance()
    {
        var answers = new MLNetFinetune.Evaluation.ScoredAnswer[] { new("Lima", "Lima", null), new("Au", "Ag", null), new("Quito", "quito", null), new("Fe", "Fe", null) };
        var groups = new[] { "capital", "symbol", "capital", "symbol" };
        var byGroup = MLNetFinetune.Evaluation.GenerationEvaluator.ExactMatchByGroup(answers, groups, new MLNetFinetune.Evaluation.AnswerNormalization { IgnoreCase = true });
        Assert.Equal([("capital", new MLNetFinetune.Evaluation.Rate(2, 2)), ("symbol", new MLNetFinetune.Evaluation.Rate(1, 2))], byGroup);
        Assert.Contains("4 answers but 3 group labels", Assert.Throws<ArgumentException>(() => MLNetFinetune.Evaluation.GenerationEvaluator.ExactMatchByGroup(answers, groups[..3])).Message);
    }
}
