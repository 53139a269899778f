using Microsoft.Extensions.AI;

namespace MLNetFinetune.Tests.PairGathering;

/// <summary>
/// A chat model for tests: <c>reply(request, attempt)</c> answers the last user message (attempt counts the requests
/// with that message, from 0), or throws to play a failing server. Counts requests and the most in flight at once.
/// </summary>
sealed class ScriptedChatClient(Func<string, int, ChatResponse> reply, TimeSpan? latency = null) : IChatClient
{
    readonly Dictionary<string, int> _attempts = [];
    int _inFlight;

    public int Requests { get; private set; }
    public int MostInFlight { get; private set; }
    public List<IReadOnlyList<ChatMessage>> Conversations { get; } = [];

    public static ChatResponse Text(string text, ChatFinishReason? finish = null) =>
        new(new ChatMessage(ChatRole.Assistant, text)) { FinishReason = finish ?? ChatFinishReason.Stop };

    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var list = messages.ToList();
        string user = list.First(m => m.Role == ChatRole.User).Text;
        int attempt;
        lock (_attempts)
        {
            Requests++;
            Conversations.Add(list);
            attempt = _attempts.GetValueOrDefault(user);
            _attempts[user] = attempt + 1;
            MostInFlight = Math.Max(MostInFlight, ++_inFlight);
        }
        try
        {
            await Task.Delay(latency ?? TimeSpan.FromMilliseconds(1), cancellationToken);
            return reply(user, attempt);
        }
        finally
        {
            lock (_attempts) _inFlight--;
        }
    }

    public IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default) =>
        throw new NotSupportedException("Pair gathering asks for whole responses.");

    public object? GetService(Type serviceType, object? serviceKey = null) =>
        serviceType == typeof(ChatClientMetadata) ? new ChatClientMetadata("scripted", null, "scripted-model") : null;

    public void Dispose() { }
}
