using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;
using MLNetFinetune.Generation;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// An <see cref="IChatClient"/> over an exported model, so a finetuned model plugs into .NET AI applications. A model
/// finetuned on conversations (its folder has a chat template and no prompt format) gets the whole conversation,
/// system and earlier turns included, rendered by that template with the generation prompt, as transformers'
/// <c>apply_chat_template</c> does. A model finetuned on single-turn pairs gets the last user message in the prompt
/// template's placeholder (the format recorded in the model folder, else the course's <c>### Question:\n{question}\n\n### Answer:</c>).
/// </summary>
public sealed class OnnxChatClient : IChatClient
{
    readonly OnnxCausalLM _model;
    readonly PromptTemplate _template;
    readonly string _placeholder;
    readonly ChatTemplate? _chatTemplate;
    readonly IReadOnlyDictionary<string, object?> _specialTokens = new Dictionary<string, object?>();
    readonly bool _ownsModel;

    /// <summary>Wraps a generator; <paramref name="template"/> must have one placeholder, filled with the user's message.</summary>
    public OnnxChatClient(OnnxCausalLM model, PromptTemplate? template = null, bool ownsModel = false)
    {
        _model = model;
        if (template == null && model.Format == null && ChatTemplate.Load(model.Folder) is { } chat)
        {
            _chatTemplate = chat;
            _specialTokens = ChatTemplate.SpecialTokens(model.Folder);
        }
        _template = template ?? model.Format?.ChatPrompt ?? PromptTemplates.QuestionAnswer.Prompt;
        if (_template.Placeholders.Count != 1)
            throw new ArgumentException($"The chat template needs exactly one placeholder for the user's message; \"{_template.Text}\" has {_template.Placeholders.Count}.", nameof(template));
        _placeholder = _template.Placeholders[0];
        _ownsModel = ownsModel;
        Metadata = new ChatClientMetadata("MLNetFinetune.OnnxRuntime", new Uri(Path.GetFullPath(model.Folder)), Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(model.Folder))));
    }

    /// <summary>The chat template conversations are rendered with (a model finetuned on conversations), or null (prompt format, last user message only).</summary>
    public ChatTemplate? ChatTemplate => _chatTemplate;

    /// <summary>Describes the provider and the model folder.</summary>
    public ChatClientMetadata Metadata { get; }

    /// <inheritdoc />
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        string prompt = Prompt(messages);
        var generation = Generation(options);
        string text = (await Task.Run(() => _model.Generate([prompt], generation, cancellationToken), cancellationToken))[0];
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, text)) { ModelId = Metadata.DefaultModelId };
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await foreach (string piece in _model.GenerateStreaming(Prompt(messages), Generation(options), cancellationToken))
            yield return new ChatResponseUpdate(ChatRole.Assistant, piece) { ModelId = Metadata.DefaultModelId };
    }

    string Prompt(IEnumerable<ChatMessage> messages)
    {
        if (_chatTemplate != null)
        {
            var turns = messages.Select(m => new ChatTurn(m.Role.Value, m.Text)).ToList();
            if (!turns.Any(t => t.Role == "user")) throw new ArgumentException("The conversation has no user message to answer.", nameof(messages));
            return _chatTemplate.Render(turns, addGenerationPrompt: true, _specialTokens);
        }
        var user = messages.LastOrDefault(m => m.Role == ChatRole.User)
            ?? throw new ArgumentException("The conversation has no user message to answer.", nameof(messages));
        return _template.Format((_placeholder, user.Text));
    }

    GenerationOptions Generation(ChatOptions? options) => new()
    {
        MaxNewTokens = options?.MaxOutputTokens ?? 100,
        Temperature = options?.Temperature ?? 0,
        TopK = options?.TopK ?? 0,
        TopP = options?.TopP ?? 1.0,
        Seed = (int)(options?.Seed ?? 0),
        // A chat template's turns end with its eos_token (<|im_end|>, <|eot_id|>), which need not be the tokenizer's end of text.
        StopSequences = [.. options?.StopSequences ?? [], .. _chatTemplate != null && _specialTokens.GetValueOrDefault("eos_token") is string eos ? [eos] : Array.Empty<string>()],
    };

    /// <inheritdoc />
    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceKey != null ? null
        : serviceType == typeof(ChatClientMetadata) ? Metadata
        : serviceType.IsInstanceOfType(this) ? this
        : serviceType.IsInstanceOfType(_model) ? _model
        : null;

    /// <inheritdoc />
    public void Dispose()
    {
        if (_ownsModel) _model.Dispose();
    }
}
