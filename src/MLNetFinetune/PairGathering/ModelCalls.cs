using System.ClientModel;
using Microsoft.Extensions.AI;
using Polly;
using Polly.Retry;

namespace MLNetFinetune.PairGathering;

/// <summary>
/// Requests to the model with the run's settings: at most <see cref="PairGatheringOptions.Concurrency"/> in flight, and
/// each retried on 429 and 5xx with exponential backoff and jitter (Polly). Other failures (a bad key, a bad request, an
/// unreachable server) end the run at once: retrying cannot mend them.
/// </summary>
internal sealed class ModelCalls
{
    readonly IChatClient _client;
    readonly PairGatheringOptions _options;
    readonly ResiliencePipeline _pipeline;
    long _retries;

    public ModelCalls(IChatClient client, PairGatheringOptions options)
    {
        if (options.Concurrency < 1) throw new ArgumentOutOfRangeException(nameof(options), options.Concurrency, "Concurrency must be at least 1.");
        if (options.MaxRetries < 0) throw new ArgumentOutOfRangeException(nameof(options), options.MaxRetries, "MaxRetries cannot be negative.");
        _client = client;
        _options = options;
        var builder = new ResiliencePipelineBuilder();
        if (options.MaxRetries > 0)
            builder.AddRetry(new RetryStrategyOptions
            {
                ShouldHandle = new PredicateBuilder().Handle<Exception>(IsTransient),
                MaxRetryAttempts = options.MaxRetries,
                BackoffType = DelayBackoffType.Exponential,
                UseJitter = true,
                Delay = options.RetryDelay,
                OnRetry = _ =>
                {
                    Interlocked.Increment(ref _retries);
                    return ValueTask.CompletedTask;
                },
            });
        _pipeline = builder.Build();
    }

    /// <summary>Requests retried so far.</summary>
    public long Retries => Interlocked.Read(ref _retries);

    /// <summary>Rate limits and server errors, as the OpenAI client (<see cref="ClientResultException"/>) and HttpClient report them.</summary>
    public static bool IsTransient(Exception e) => e switch
    {
        ClientResultException c => c.Status == 429 || c.Status >= 500,
        HttpRequestException { StatusCode: { } status } => (int)status == 429 || (int)status >= 500,
        _ => false,
    };

    /// <summary>The messages of a request: the system prompt, if any, then <paramref name="user"/>.</summary>
    public List<ChatMessage> Messages(string user) =>
        _options.SystemPrompt is { } system ? [new(ChatRole.System, system), new(ChatRole.User, user)] : [new(ChatRole.User, user)];

    /// <summary>Asks the model, retrying transient failures.</summary>
    public async Task<ChatResponse> AskAsync(IReadOnlyList<ChatMessage> messages, CancellationToken cancellationToken)
    {
        var chat = new ChatOptions { MaxOutputTokens = _options.MaxOutputTokens, Temperature = _options.Temperature };
        try
        {
            return await _pipeline.ExecuteAsync(async token => await _client.GetResponseAsync(messages, chat, token), cancellationToken);
        }
        catch (Exception e) when (IsTransient(e))
        {
            throw new InvalidOperationException($"The model still failed after {_options.MaxRetries} retries ({e.Message}); rerun later to continue where this run stopped.", e);
        }
    }

    /// <summary>Runs <paramref name="work"/> over <paramref name="items"/>, at most Concurrency at a time; the results keep the items' order.</summary>
    public async Task<TResult[]> ForEachAsync<TItem, TResult>(IReadOnlyList<TItem> items, Func<TItem, CancellationToken, Task<TResult>> work, CancellationToken cancellationToken)
    {
        var results = new TResult[items.Count];
        await Parallel.ForEachAsync(Enumerable.Range(0, items.Count), new ParallelOptions { MaxDegreeOfParallelism = _options.Concurrency, CancellationToken = cancellationToken },
            async (i, token) => results[i] = await work(items[i], token));
        return results;
    }
}
