using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// How an exported model turns a conversation into its prompt, as it was trained. A model finetuned on conversations
/// (its folder has a chat template and no prompt format) gets the whole conversation, system and earlier turns
/// included, rendered by that template with the generation prompt, as transformers' <c>apply_chat_template</c> does;
/// its turns end with the template's <c>eos_token</c>, a stop string. A model finetuned on single-turn pairs gets the
/// last user message in its prompt template's placeholder (the format recorded in the folder, else the course's
/// <c>### Question:\n{question}\n\n### Answer:</c>).
/// </summary>
public sealed class ChatPrompt
{
    readonly PromptTemplate _template;
    readonly string _placeholder;
    readonly IReadOnlyDictionary<string, object?> _specialTokens = new Dictionary<string, object?>();

    ChatPrompt(OnnxCausalLM model, PromptTemplate? template)
    {
        if (template == null && model.Format == null && ChatTemplate.Load(model.Folder) is { } chat)
        {
            Template = chat;
            _specialTokens = ChatTemplate.SpecialTokens(model.Folder);
        }
        _template = template ?? model.Format?.ChatPrompt ?? PromptTemplates.QuestionAnswer.Prompt;
        if (_template.Placeholders.Count != 1)
            throw new ArgumentException($"The prompt template needs exactly one placeholder for the user's message; \"{_template.Text}\" has {_template.Placeholders.Count}.", nameof(template));
        _placeholder = _template.Placeholders[0];
        StopSequences = Template != null && _specialTokens.GetValueOrDefault("eos_token") is string eos ? [eos] : [];
        // A chat template ends its generation prompt where the answer starts; a format given here says nothing of it.
        AnswerSeparator = Template == null && template == null ? (model.Format ?? PromptTemplates.QuestionAnswer).AnswerSeparator : "";
    }

    /// <summary>The prompt of <paramref name="model"/>'s folder; <paramref name="template"/>, when given, replaces it (one placeholder, the user's message).</summary>
    public static ChatPrompt For(OnnxCausalLM model, PromptTemplate? template = null) => new(model, template);

    /// <summary>The chat template conversations are rendered with, or null (prompt format, last user message only).</summary>
    public ChatTemplate? Template { get; }

    /// <summary>Strings that end an answer besides end of text: a chat template's <c>eos_token</c> (<c>&lt;|im_end|&gt;</c>, <c>&lt;|eot_id|&gt;</c>), which need not be the tokenizer's end of text.</summary>
    public IReadOnlyList<string> StopSequences { get; }

    /// <summary>What the model generates before the answer itself (its prompt format's separator: <c>" "</c>, <c>"\n"</c>), or empty.</summary>
    public string AnswerSeparator { get; }

    /// <summary>A trimmer for one answer: drops <see cref="AnswerSeparator"/> from its start, whole or in streamed pieces.</summary>
    public AnswerTrimmer NewAnswer() => new(AnswerSeparator);

    /// <summary>The prompt for <paramref name="messages"/> (roles <c>system</c>, <c>user</c>, <c>assistant</c>); fails when no message is the user's.</summary>
    public string Render(IReadOnlyList<ChatTurn> messages)
    {
        if (!messages.Any(t => t.Role == "user")) throw new ArgumentException("The conversation has no user message to answer.", nameof(messages));
        return Template != null
            ? Template.Render(messages, addGenerationPrompt: true, _specialTokens)
            : _template.Format((_placeholder, messages.Last(t => t.Role == "user").Content));
    }
}

/// <summary>Drops a prompt format's answer separator from the start of one answer, whether it comes whole or in pieces.</summary>
public sealed class AnswerTrimmer(string separator)
{
    string _left = separator;

    /// <summary>The piece without the part of the separator it holds; once the answer itself has begun, the piece as it is.</summary>
    public string Next(string piece)
    {
        int i = 0;
        while (_left.Length > 0 && i < piece.Length && piece[i] == _left[0])
        {
            _left = _left[1..];
            i++;
        }
        if (i < piece.Length) _left = ""; // the answer has begun: nothing later is trimmed
        return piece[i..];
    }
}
