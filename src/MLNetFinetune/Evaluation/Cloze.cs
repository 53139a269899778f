namespace MLNetFinetune.Evaluation;

/// <summary>A prose prompt whose continuation should begin with <paramref name="Answer"/> ("The capital of Suriname is" → "Paramaribo").</summary>
public sealed record ClozeItem(string Prompt, string Answer);

/// <summary>
/// Cloze recall: does the model, continuing a sentence in the words of its pretraining text, name the fact? Measures
/// what pretraining stored, before any finetuning teaches the model to answer questions.
/// </summary>
public static class ClozeEvaluator
{
    static readonly AnswerNormalization Normalization = new() { IgnoreCase = true, IgnorePunctuation = true };

    /// <summary>
    /// Whether <paramref name="continuation"/> begins with <paramref name="answer"/> as whole words (case and punctuation
    /// ignored): "Paramaribo. It lies…" counts for Paramaribo, "Parama" and "Paramaribos" do not.
    /// </summary>
    public static bool IsHit(string continuation, string answer)
    {
        string said = Normalization.Apply(continuation), expected = Normalization.Apply(answer);
        return expected.Length > 0 && said.StartsWith(expected, StringComparison.Ordinal)
            && (said.Length == expected.Length || said[expected.Length] == ' ');
    }

    /// <summary>The share of items whose continuation (from <paramref name="complete"/>) names the answer first.</summary>
    public static Rate Evaluate(IEnumerable<ClozeItem> items, Func<string, string> complete) =>
        Evaluate(items.ToList(), prompts => prompts.Select(complete).ToList());

    /// <summary>The same, with every prompt completed in one call (batched generation), in order.</summary>
    public static Rate Evaluate(IReadOnlyList<ClozeItem> items, Func<IReadOnlyList<string>, IReadOnlyList<string>> completeAll)
    {
        var continuations = completeAll(items.Select(i => i.Prompt).ToList());
        return new Rate(items.Where((item, i) => IsHit(continuations[i], item.Answer)).LongCount(), items.Count);
    }
}
