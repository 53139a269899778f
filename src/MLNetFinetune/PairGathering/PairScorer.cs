using Microsoft.Extensions.AI;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;

namespace MLNetFinetune.PairGathering;

/// <summary>A model's answers to a sample of pairs, scored against the pairs' answers.</summary>
/// <param name="Metrics">Exact match (with its 95% Wilson interval) and token F1.</param>
/// <param name="Questions">The sampled questions, in file order.</param>
/// <param name="Answers">The expected and generated answer of each.</param>
public sealed record PairScore(GenerationMetrics Metrics, IReadOnlyList<string> Questions, IReadOnlyList<ScoredAnswer> Answers);

/// <summary>
/// How well a model does a task, judged on a seeded sample of its pairs: whether the large model does it well enough
/// ("moderately") to be worth distilling, or how close a finetuned one comes.
/// </summary>
public static class PairScorer
{
    /// <summary>
    /// Asks the model the questions of <paramref name="count"/> pairs drawn with <paramref name="seed"/> from a pairs file
    /// (question/answer, Alpaca or prompt/completion; JSONL or CSV) and scores its answers. Requests use
    /// <paramref name="requests"/>' settings (system prompt, tokens, temperature, concurrency, retries). Answers are compared
    /// SQuAD-style (case, punctuation and spacing ignored) unless <paramref name="normalization"/> says otherwise.
    /// </summary>
    public static async Task<PairScore> ScoreAsync(IChatClient chatClient, string pairsPath, int count, PairGatheringOptions? requests = null, int seed = 0,
        AnswerNormalization? normalization = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(chatClient);
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "Score at least one pair.");
        var pairs = InstructionData.Load(pairsPath);
        var layout = InstructionData.DetectLayout(pairs.Columns.Select(c => c.Name))!.Value;
        if (layout == InstructionLayout.Conversation)
            throw new ArgumentException($"'{pairsPath}' holds conversations; scoring takes question/answer, Alpaca or prompt/completion pairs.", nameof(pairsPath));
        string[] fields = [.. InstructionData.FieldsOf(layout)];
        var sample = Sample(pairs.Rows.Count, count, seed);
        var questions = sample.Select(i => Question(layout, fields, pairs.Rows[i])).ToList();
        var expected = sample.Select(i => (string)pairs.Rows[i][fields[^1]]).ToList();

        var calls = new ModelCalls(chatClient, requests ?? new PairGatheringOptions());
        var generated = await calls.ForEachAsync(questions, async (q, token) => (await calls.AskAsync(calls.Messages(q), token)).Text.Trim(), cancellationToken);
        var answers = expected.Select((e, i) => new ScoredAnswer(e, generated[i], null)).ToList();
        return new PairScore(GenerationEvaluator.Score(answers, normalization ?? new AnswerNormalization { IgnoreCase = true, IgnorePunctuation = true }), questions, answers);
    }

    // count rows of n drawn without replacement (all of them when count ≥ n), in file order.
    static List<long> Sample(long n, int count, int seed)
    {
        var rows = Enumerable.Range(0, (int)n).Select(i => (long)i).ToArray();
        new Random(seed).Shuffle(rows);
        return rows.Take(count).Order().ToList();
    }

    // What the model is asked: the question, the prompt, or an Alpaca instruction with its input below it.
    static string Question(InstructionLayout layout, string[] fields, Microsoft.Data.Analysis.DataFrameRow row) =>
        layout == InstructionLayout.Alpaca && !string.IsNullOrWhiteSpace((string)row["input"])
            ? $"{row["instruction"]}\n\n{row["input"]}"
            : (string)row[fields[0]];
}
