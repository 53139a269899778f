using System.Text;

namespace MLNetFinetune.Data;

/// <summary>
/// A text template with <c>{column}</c> placeholders, like <c>### Question:\n{question}\n\n### Answer:</c>.
/// <c>{{</c> and <c>}}</c> stand for literal braces. A template may name an alternative used for rows where a given
/// column is empty (the Alpaca template drops its Input section that way).
/// </summary>
public sealed class PromptTemplate
{
    readonly (string Literal, string? Placeholder)[] _parts;

    /// <summary>Parses a template; unbalanced braces and empty placeholders fail with their position.</summary>
    public PromptTemplate(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        Text = text;
        _parts = Parse(text);
        Placeholders = _parts.Where(p => p.Placeholder != null).Select(p => p.Placeholder!).Distinct(StringComparer.Ordinal).ToArray();
    }

    PromptTemplate(string text, string column, PromptTemplate whenEmpty) : this(text)
    {
        WhenEmptyColumn = column;
        WhenEmptyTemplate = whenEmpty;
    }

    /// <summary>The template text as given.</summary>
    public string Text { get; }

    /// <summary>The column names this template's text reads, in order of first use (see <see cref="Columns"/> for all).</summary>
    public IReadOnlyList<string> Placeholders { get; }

    /// <summary>The column whose emptiness selects <see cref="WhenEmptyTemplate"/>, if any.</summary>
    public string? WhenEmptyColumn { get; }

    /// <summary>The template used for rows where <see cref="WhenEmptyColumn"/> is empty or whitespace.</summary>
    public PromptTemplate? WhenEmptyTemplate { get; }

    /// <summary>Every column this template, or its alternative, reads.</summary>
    public IEnumerable<string> Columns => Placeholders.Concat(WhenEmptyTemplate?.Columns ?? []).Append(WhenEmptyColumn ?? "")
        .Where(c => c.Length > 0).Distinct(StringComparer.Ordinal);

    /// <summary>This template, with <paramref name="alternative"/> used where <paramref name="column"/> is empty.</summary>
    public PromptTemplate WhenEmpty(string column, string alternative) => WhenEmptyTemplate == null
        ? new(Text, column, new PromptTemplate(alternative))
        : throw new InvalidOperationException($"The template already has an alternative for an empty '{WhenEmptyColumn}'.");

    /// <summary>Renders the template for one row; <paramref name="value"/> returns a column's text.</summary>
    public string Format(Func<string, ReadOnlyMemory<char>> value)
    {
        if (WhenEmptyTemplate != null && value(WhenEmptyColumn!).Span.IsWhiteSpace()) return WhenEmptyTemplate.Format(value);
        var sb = new StringBuilder(Text.Length + 64);
        foreach (var (literal, placeholder) in _parts)
        {
            sb.Append(literal);
            if (placeholder != null) sb.Append(value(placeholder).Span);
        }
        return sb.ToString();
    }

    /// <summary>Renders the template from name/value pairs; a placeholder without a value fails naming it.</summary>
    public string Format(params (string Name, string Value)[] values)
    {
        var map = values.ToDictionary(v => v.Name, v => v.Value, StringComparer.Ordinal);
        return Format(name => map.TryGetValue(name, out var v) ? v.AsMemory()
            : throw new ArgumentException($"The template needs a value for '{name}' (given: {string.Join(", ", map.Keys)})."));
    }

    /// <inheritdoc />
    public override string ToString() => Text;

    static (string, string?)[] Parse(string text)
    {
        var parts = new List<(string, string?)>();
        var literal = new StringBuilder();
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '{' && i + 1 < text.Length && text[i + 1] == '{') { literal.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < text.Length && text[i + 1] == '}') { literal.Append('}'); i++; continue; }
            if (c == '}') throw new FormatException($"Unmatched '}}' at position {i} of template \"{text}\" (write '}}}}' for a literal brace).");
            if (c != '{') { literal.Append(c); continue; }
            int close = text.IndexOf('}', i + 1);
            int nextOpen = text.IndexOf('{', i + 1);
            if (close < 0 || (nextOpen >= 0 && nextOpen < close))
                throw new FormatException($"Unclosed '{{' at position {i} of template \"{text}\" (write '{{{{' for a literal brace).");
            string name = text[(i + 1)..close].Trim();
            if (name.Length == 0) throw new FormatException($"Empty placeholder '{{}}' at position {i} of template \"{text}\".");
            parts.Add((literal.ToString(), name));
            literal.Clear();
            i = close;
        }
        parts.Add((literal.ToString(), null));
        return parts.ToArray();
    }
}

/// <summary>A training template (prompt and response) with its prompting form (prompt only, for generation).</summary>
/// <param name="Training">The whole example: what the model trains on.</param>
/// <param name="Prompt">The same text up to where the response begins: what the model is given at inference.</param>
public sealed record PromptFormat(PromptTemplate Training, PromptTemplate Prompt);

/// <summary>The built-in templates.</summary>
public static class PromptTemplates
{
    /// <summary>
    /// The question/answer template of the course (lamini_docs layout, columns <c>question</c> and <c>answer</c>):
    /// <c>### Question:\n{question}\n\n### Answer:\n{answer}</c>, and the prompt form ending at <c>### Answer:</c>.
    /// </summary>
    public static PromptFormat QuestionAnswer { get; } = new(
        new PromptTemplate("### Question:\n{question}\n\n### Answer:\n{answer}"),
        new PromptTemplate("### Question:\n{question}\n\n### Answer:"));

    /// <summary>
    /// The Stanford Alpaca template (columns <c>instruction</c>, <c>input</c>, <c>output</c>), in its two variants:
    /// with an Input section, and without it for rows whose <c>input</c> is empty. Reproduced exactly, since
    /// models tuned on Alpaca-format data expect these words.
    /// </summary>
    public static PromptFormat Alpaca { get; } = new(
        new PromptTemplate(AlpacaWithInput + "\n{output}").WhenEmpty("input", AlpacaWithoutInput + "\n{output}"),
        new PromptTemplate(AlpacaWithInput).WhenEmpty("input", AlpacaWithoutInput));

    /// <summary>Plain prompt/completion pairs (columns <c>prompt</c>, <c>completion</c>): the text is their concatenation.</summary>
    public static PromptFormat PromptCompletion { get; } = new(
        new PromptTemplate("{prompt}{completion}"),
        new PromptTemplate("{prompt}"));

    const string AlpacaWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. " +
        "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:";

    const string AlpacaWithoutInput =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Response:";
}
