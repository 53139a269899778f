using System.Text.Json;
using MLNetFinetune.Data;

namespace MLNetFinetune.Evaluation;

/// <summary>A model that can say how likely a continuation is after a context (the basis of multiple-choice scoring).</summary>
public interface ILogLikelihoodScorer
{
    /// <summary>Summed log-probability of <paramref name="continuation"/>'s tokens given <paramref name="context"/>, and their number.</summary>
    (double LogLikelihood, int Tokens) LogLikelihood(string context, string continuation);
}

/// <summary>One multiple-choice item: a question, its choices and the index of the right one.</summary>
public sealed record MultipleChoiceItem(string Question, IReadOnlyList<string> Choices, int Answer);

/// <summary>How a choice's log-likelihood is compared across choices of different lengths.</summary>
public enum ChoiceScoring
{
    /// <summary>Summed log-probability (favours short choices).</summary>
    Sum,
    /// <summary>Mean log-probability per token (lm-evaluation-harness's length-normalised accuracy uses characters; tokens are the model's unit).</summary>
    PerToken,
}

/// <summary>Result of a multiple-choice evaluation.</summary>
/// <param name="Accuracy">Items whose highest-scoring choice is the answer.</param>
/// <param name="Predictions">The chosen index per item.</param>
public sealed record MultipleChoiceResult(Rate Accuracy, IReadOnlyList<int> Predictions);

/// <summary>Multiple-choice scoring by log-likelihood, as ARC-easy and similar benchmarks are scored.</summary>
public static class MultipleChoiceEvaluator
{
    /// <summary>Scores every choice as a continuation of <c>"{question}{separator}"</c> and picks the most likely.</summary>
    public static MultipleChoiceResult Evaluate(IEnumerable<MultipleChoiceItem> items, ILogLikelihoodScorer scorer,
        ChoiceScoring scoring = ChoiceScoring.PerToken, string separator = " ")
    {
        var predictions = new List<int>();
        long hits = 0;
        foreach (var item in items)
        {
            int best = -1;
            double bestScore = double.NegativeInfinity;
            for (int c = 0; c < item.Choices.Count; c++)
            {
                var (logLikelihood, tokens) = scorer.LogLikelihood(item.Question + separator, item.Choices[c]);
                double score = scoring == ChoiceScoring.Sum ? logLikelihood : logLikelihood / Math.Max(1, tokens);
                if (score > bestScore) (best, bestScore) = (c, score);
            }
            predictions.Add(best);
            if (best == item.Answer) hits++;
        }
        return new MultipleChoiceResult(new Rate(hits, predictions.Count), predictions);
    }

    /// <summary>
    /// Reads items from JSON Lines with <c>question</c>, <c>choices</c> (an array of strings) and <c>answer</c> (the index of
    /// the right choice); a bad line fails with file and line.
    /// </summary>
    public static IReadOnlyList<MultipleChoiceItem> LoadJsonl(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Multiple-choice file '{path}' does not exist.", path);
        var items = new List<MultipleChoiceItem>();
        using var lines = new Utf8LineReader(DataFiles.OpenRead(path), path, 16 << 20);
        while (lines.TryReadLine(out var line))
        {
            if (Utf8LineReader.IsBlank(line)) continue;
            using var record = JsonRecords.ParseObject(line, path, lines.LineNumber);
            var root = record.RootElement;
            DataFileException Bad(string problem) => new(path, lines.LineNumber, problem);
            string question = root.TryGetProperty("question", out var q) && q.ValueKind == JsonValueKind.String ? q.GetString()! : throw Bad("no \"question\" string");
            if (!root.TryGetProperty("choices", out var c) || c.ValueKind != JsonValueKind.Array || c.GetArrayLength() < 2
                || c.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.String))
                throw Bad("\"choices\" must be an array of at least two strings");
            var choices = c.EnumerateArray().Select(x => x.GetString()!).ToList();
            if (!root.TryGetProperty("answer", out var a) || a.ValueKind != JsonValueKind.Number || !a.TryGetInt32(out int answer) || answer < 0 || answer >= choices.Count)
                throw Bad($"\"answer\" must be the index of a choice (0..{choices.Count - 1})");
            items.Add(new MultipleChoiceItem(question, choices, answer));
        }
        if (items.Count == 0) throw new DataFileException(path, 0, "the file holds no items");
        return items;
    }
}
