using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;
using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;
using MLNetFinetune.Generation;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// An <see cref="IChatClient"/> over an exported model, so a finetuned model plugs into .NET AI applications. The
/// conversation becomes the prompt the model was trained on (<see cref="ChatPrompt"/>): its chat template, or its prompt
/// format with the last user message. Concurrent calls share decode steps (<see cref="ContinuousBatcher"/>), and each
/// response says why it ended (<see cref="ChatFinishReason.Length"/> at the token limit) and how many tokens it used.
/// The answer comes without the separator the prompt format puts before it (<c>qa-inline</c>'s space).
/// </summary>
public sealed class OnnxChatClient : IChatClient
{
    readonly OnnxCausalLM _model;
    readonly ChatPrompt _prompt;
    readonly bool _ownsModel;
    readonly Lock _batcherLock = new();
    ContinuousBatcher? _batcher;

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
        var generation = Submit(messages, options, streaming: false, cancellationToken);
        var result = await generation.Completion.WaitAsync(cancellationToken);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, _prompt.NewAnswer().Next(result.Text)))
        {
            ModelId = Metadata.DefaultModelId, FinishReason = Finish(result), Usage = Usage(result),
        };
    }

    /// <inheritdoc />
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var generation = Submit(messages, options, streaming: true, cancellationToken);
        var answer = _prompt.NewAnswer();
        await foreach (string piece in generation.Pieces.ReadAllAsync(cancellationToken))
            if (answer.Next(piece) is { Length: > 0 } text) yield return new ChatResponseUpdate(ChatRole.Assistant, text) { ModelId = Metadata.DefaultModelId };
        var result = await generation.Completion.WaitAsync(cancellationToken);
        yield return new ChatResponseUpdate(ChatRole.Assistant, [new UsageContent(Usage(result))]) { ModelId = Metadata.DefaultModelId, FinishReason = Finish(result) };
    }

    // Concurrent calls share decode steps: every call goes through one batcher, started on first use.
    BatchedGeneration Submit(IEnumerable<ChatMessage> messages, ChatOptions? options, bool streaming, CancellationToken cancellationToken)
    {
        var generation = Generation(options);
        generation.Validate();
        long[] ids = DecodeLoop.CheckPrompt(_model, [.. _model.Tokenizer.EncodeSequence(Prompt(messages)).Select(i => (long)i)], 0, generation.MaxNewTokens);
        lock (_batcherLock) _batcher ??= new ContinuousBatcher(_model);
        return _batcher.Submit(ids, generation, streaming, cancellationToken);
    }

    static ChatFinishReason Finish(BatchedResult result) => result.FinishReason == "length" ? ChatFinishReason.Length : ChatFinishReason.Stop;

    static UsageDetails Usage(BatchedResult result) => new()
    {
        InputTokenCount = result.PromptTokens, OutputTokenCount = result.CompletionTokens, TotalTokenCount = result.PromptTokens + result.CompletionTokens,
    };

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
        _batcher?.Dispose();
        if (_ownsModel) _model.Dispose();
    }
}
