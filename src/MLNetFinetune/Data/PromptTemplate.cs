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

/// <summary>
/// How a model is prompted: the prompt template (up to where the response begins) and the response part, including
/// the separator before the answer (<c>"\n{answer}"</c> or <c>" {answer}"</c>: with byte-level BPE they are different
/// tokens, so the separator is part of what the model learns). Recorded in every finetuned model folder
/// (<see cref="PromptFormats.Save"/>), so evaluation, chat and serving prompt the model the way it was trained.
/// </summary>
/// <param name="Name">A short name (<c>qa</c>, <c>qa-inline</c>, <c>alpaca</c>, <c>prompt-completion</c>, or a file's).</param>
/// <param name="Prompt">The prompt form: what the model is given at inference.</param>
/// <param name="Response">The response part: what the model learns to produce after the prompt (one placeholder).</param>
public sealed record PromptFormat(string Name, PromptTemplate Prompt, PromptTemplate Response)
{
    /// <summary>The whole training text: prompt then response (with the prompt's alternative, if any).</summary>
    public PromptTemplate Training => Prompt.WhenEmptyTemplate is { } alternative
        ? new PromptTemplate(Prompt.Text + Response.Text).WhenEmpty(Prompt.WhenEmptyColumn!, alternative.Text + Response.Text)
        : new PromptTemplate(Prompt.Text + Response.Text);

    /// <summary>The field the response part reads (<c>answer</c>, <c>output</c>, <c>completion</c>).</summary>
    public string ResponseField => Response.Placeholders.Count == 1 ? Response.Placeholders[0]
        : throw new InvalidOperationException($"The response template \"{Response.Text}\" must have exactly one placeholder.");

    /// <summary>
    /// What the response part puts before the answer (<c>" "</c> for <c>qa-inline</c>, <c>"\n"</c> for <c>qa</c>): the
    /// model generates it, but it is not part of the answer a chat client shows.
    /// </summary>
    public string AnswerSeparator
    {
        get
        {
            string marked = Response.Format((ResponseField, "\0"));
            return marked[..marked.IndexOf('\0')];
        }
    }

    /// <summary>
    /// The prompt a lone user message fills (chat): the variant for empty other fields when the prompt has one (Alpaca
    /// without input), else the prompt itself.
    /// </summary>
    public PromptTemplate ChatPrompt => Prompt.WhenEmptyTemplate ?? Prompt;

    /// <summary>The fields the prompt reads.</summary>
    public IEnumerable<string> PromptFields => Prompt.Columns;
}

/// <summary>The built-in prompt formats, and reading and writing them in model folders.</summary>
public static class PromptTemplates
{
    /// <summary>
    /// The question/answer template of the course (lamini_docs layout, columns <c>question</c> and <c>answer</c>):
    /// <c>### Question:\n{question}\n\n### Answer:</c>, the answer on a new line.
    /// </summary>
    public static PromptFormat QuestionAnswer { get; } = new("qa",
        new PromptTemplate("### Question:\n{question}\n\n### Answer:"), new PromptTemplate("\n{answer}"));

    /// <summary>
    /// The same template with the answer after a space (<c>### Answer: Lima</c>): the tokens a corpus uses mid-sentence,
    /// so knowledge stored in pretraining stays reachable (what the quickstart uses).
    /// </summary>
    public static PromptFormat QuestionAnswerInline { get; } = new("qa-inline",
        new PromptTemplate("### Question:\n{question}\n\n### Answer:"), new PromptTemplate(" {answer}"));

    /// <summary>
    /// The Stanford Alpaca template (columns <c>instruction</c>, <c>input</c>, <c>output</c>), in its two variants:
    /// with an Input section, and without it for rows whose <c>input</c> is empty. Reproduced exactly, since
    /// models tuned on Alpaca-format data expect these words.
    /// </summary>
    public static PromptFormat Alpaca { get; } = new("alpaca",
        new PromptTemplate(AlpacaWithInput).WhenEmpty("input", AlpacaWithoutInput), new PromptTemplate("\n{output}"));

    /// <summary>Plain prompt/completion pairs (columns <c>prompt</c>, <c>completion</c>): the text is their concatenation.</summary>
    public static PromptFormat PromptCompletion { get; } = new("prompt-completion", new PromptTemplate("{prompt}"), new PromptTemplate("{completion}"));

    /// <summary>The built-in formats by name.</summary>
    public static IReadOnlyList<PromptFormat> BuiltIn { get; } = [QuestionAnswer, QuestionAnswerInline, Alpaca, PromptCompletion];

    const string AlpacaWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. " +
        "Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:";

    const string AlpacaWithoutInput =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n" +
        "### Instruction:\n{instruction}\n\n### Response:";
}
