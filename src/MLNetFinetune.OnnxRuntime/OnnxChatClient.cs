using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using MLNetFinetune.Data;
using MLNetFinetune.Generation;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// An <see cref="IChatClient"/> over an exported model, so a finetuned model plugs into .NET AI applications. The
/// model was finetuned on single-turn prompts, so the last user message fills the prompt template's placeholder (by
/// default the format recorded in the model folder, else the course's <c>### Question:\n{question}\n\n### Answer:</c>);
/// earlier turns and system messages are not sent.
/// </summary>
public sealed class OnnxChatClient : IChatClient
{
    readonly OnnxCausalLM _model;
    readonly PromptTemplate _template;
    readonly string _placeholder;
    readonly bool _ownsModel;

    /// <summary>Wraps a generator; <paramref name="template"/> must have one placeholder, filled with the user's message.</summary>
    public OnnxChatClient(OnnxCausalLM model, PromptTemplate? template = null, bool ownsModel = false)
    {
        _model = model;
        _template = template ?? model.Format?.ChatPrompt ?? PromptTemplates.QuestionAnswer.Prompt;
        if (_template.Placeholders.Count != 1)
            throw new ArgumentException($"The chat template needs exactly one placeholder for the user's message; \"{_template.Text}\" has {_template.Placeholders.Count}.", nameof(template));
        _placeholder = _template.Placeholders[0];
        _ownsModel = ownsModel;
        Metadata = new ChatClientMetadata("MLNetFinetune.OnnxRuntime", new Uri(Path.GetFullPath(model.Folder)), Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(model.Folder))));
    }

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
        var user = messages.LastOrDefault(m => m.Role == ChatRole.User)
            ?? throw new ArgumentException("The conversation has no user message to answer.", nameof(messages));
        return _template.Format((_placeholder, user.Text));
    }

    static GenerationOptions Generation(ChatOptions? options) => new()
    {
        MaxNewTokens = options?.MaxOutputTokens ?? 100,
        Temperature = options?.Temperature ?? 0,
        TopK = options?.TopK ?? 0,
        TopP = options?.TopP ?? 1.0,
        Seed = (int)(options?.Seed ?? 0),
        StopSequences = options?.StopSequences?.ToList() ?? [],
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
