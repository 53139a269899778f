using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;
using MLNetFinetune.Generation;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// An <see cref="IChatClient"/> over an exported model, so a finetuned model plugs into .NET AI applications. The
/// conversation becomes the prompt the model was trained on (<see cref="ChatPrompt"/>): its chat template, or its prompt
/// format with the last user message.
/// </summary>
public sealed class OnnxChatClient : IChatClient
{
    readonly OnnxCausalLM _model;
    readonly ChatPrompt _prompt;
    readonly bool _ownsModel;

    /// <summary>Wraps a generator; <paramref name="template"/>, when given, must have one placeholder, filled with the user's message.</summary>
    public OnnxChatClient(OnnxCausalLM model, PromptTemplate? template = null, bool ownsModel = false)
    {
        _model = model;
        _prompt = ChatPrompt.For(model, template);
        _ownsModel = ownsModel;
        Metadata = new ChatClientMetadata("MLNetFinetune.OnnxRuntime", new Uri(Path.GetFullPath(model.Folder)), Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(model.Folder))));
    }

    /// <summary>The chat template conversations are rendered with (a model finetuned on conversations), or null (prompt format, last user message only).</summary>
    public ChatTemplate? ChatTemplate => _prompt.Template;

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

    string Prompt(IEnumerable<ChatMessage> messages) => _prompt.Render([.. messages.Select(m => new ChatTurn(m.Role.Value, m.Text))]);

    GenerationOptions Generation(ChatOptions? options) => new()
    {
        MaxNewTokens = options?.MaxOutputTokens ?? 100,
        Temperature = options?.Temperature ?? 0,
        TopK = options?.TopK ?? 0,
        TopP = options?.TopP ?? 1.0,
        Seed = (int)(options?.Seed ?? 0),
        StopSequences = [.. options?.StopSequences ?? [], .. _prompt.StopSequences],
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
