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
    }

    /// <summary>The prompt of <paramref name="model"/>'s folder; <paramref name="template"/>, when given, replaces it (one placeholder, the user's message).</summary>
    public static ChatPrompt For(OnnxCausalLM model, PromptTemplate? template = null) => new(model, template);

    /// <summary>The chat template conversations are rendered with, or null (prompt format, last user message only).</summary>
    public ChatTemplate? Template { get; }

    /// <summary>Strings that end an answer besides end of text: a chat template's <c>eos_token</c> (<c>&lt;|im_end|&gt;</c>, <c>&lt;|eot_id|&gt;</c>), which need not be the tokenizer's end of text.</summary>
    public IReadOnlyList<string> StopSequences { get; }

    /// <summary>The prompt for <paramref name="messages"/> (roles <c>system</c>, <c>user</c>, <c>assistant</c>); fails when no message is the user's.</summary>
    public string Render(IReadOnlyList<ChatTurn> messages)
    {
        if (!messages.Any(t => t.Role == "user")) throw new ArgumentException("The conversation has no user message to answer.", nameof(messages));
        return Template != null
            ? Template.Render(messages, addGenerationPrompt: true, _specialTokens)
            : _template.Format((_placeholder, messages.Last(t => t.Role == "user").Content));
    }
}
