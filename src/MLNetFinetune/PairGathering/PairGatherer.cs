using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using Microsoft.Extensions.AI;

namespace MLNetFinetune.PairGathering;

/// <summary>
/// Gathers input/output pairs from a large model behind any <see cref="IChatClient"/> (an OpenAI-compatible endpoint, a
/// local exported model): the course lab's step 1, trying a prompt on a few inputs (<see cref="TryAsync"/>), and step 2,
/// gathering pairs to finetune a small model on (<see cref="GatherAsync"/>).
/// </summary>
public static class PairGatherer
{
    /// <summary>The ledger's name is the pairs file's with this added: <c>pairs.jsonl.ledger.jsonl</c>.</summary>
    public const string LedgerSuffix = ".ledger.jsonl";

    /// <summary>
    /// Asks the model about the first <paramref name="count"/> inputs (or documents) and returns what it was asked and
    /// what it replied, unfiltered: for prompt engineering before a run.
    /// </summary>
    public static async Task<IReadOnlyList<PromptTrial>> TryAsync(IChatClient chatClient, PairGatheringOptions options, int count, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(chatClient);
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), count, "Try at least one input.");
        var source = PairSource.Create(options);
        var calls = new ModelCalls(chatClient, options);
        var items = source.Items().Take(count).ToList();
        return await calls.ForEachAsync(items, async (item, token) =>
            new PromptTrial(item.Text, (await calls.AskAsync(calls.Messages(source.Request(item)), token)).Text), cancellationToken);
    }

    /// <summary>
    /// Gathers pairs into <see cref="PairGatheringOptions.OutputPath"/> (JSON Lines: <c>question</c>, <c>answer</c>,
    /// <c>source</c>, <c>model</c>, <c>prompt_hash</c>, readable by <c>finetune --pairs</c> as question/answer pairs).
    /// Inputs go in batches of four times the concurrency; each batch is asked concurrently, then filtered in input order
    /// and appended (flushed to disk) with its ledger lines, so the file is the same whether the run went through at once
    /// or was killed and rerun, and a rerun asks only what is not done yet.
    /// </summary>
    public static async Task<PairGatheringReport> GatherAsync(IChatClient chatClient, PairGatheringOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(chatClient);
        if (string.IsNullOrWhiteSpace(options.OutputPath)) throw new ArgumentException("Give the pairs file to write (OutputPath, --out).", nameof(options));
        var clock = Stopwatch.StartNew();
        var source = PairSource.Create(options);
        var calls = new ModelCalls(chatClient, options);
        var filter = new PairFilter(options);
        string model = options.ModelId ?? chatClient.GetService<ChatClientMetadata>()?.DefaultModelId ?? "unknown";
        var settings = new LedgerSettings(source.Mode, source.Path, model, PromptHash(options, source));
        long total = source.Count(options.MaxInputs ?? long.MaxValue); // bad inputs fail before any file is made
        using var store = PairStore.Open(options.OutputPath, settings, options.AllowSettingsChange, filter);
        long resumed = store.InputsDone;
        long keptBefore = store.Kept, asked = 0;
        int batchSize = options.Concurrency * 4;
        foreach (var batch in source.Items().Take((int)Math.Min(total, int.MaxValue)).Skip((int)Math.Min(resumed, int.MaxValue)).Chunk(batchSize))
        {
            var candidates = await calls.ForEachAsync(batch, (item, token) => source.AskAsync(calls, item, token), cancellationToken);
            store.Append(batch.Select((item, i) => Decide(item, candidates[i], filter)).ToList());
            asked += batch.Length;
            double seconds = clock.Elapsed.TotalSeconds;
            options.Progress?.Report(new PairGatheringProgress(store.InputsDone, total, store.Kept, store.Rejected, (store.Kept - keptBefore) / seconds,
                clock.Elapsed, TimeSpan.FromSeconds(seconds / asked * (total - store.InputsDone))));
        }
        return new PairGatheringReport(store.Kept, store.Rejects, store.Malformed, calls.Retries, asked, resumed, clock.Elapsed.TotalSeconds);
    }

    /// <summary>
    /// The first 16 hex digits of the SHA-256 of what decides the requests: the mode, the template (or task and its
    /// settings), the system prompt, the token limit and the temperature. Recorded with every pair.
    /// </summary>
    public static string PromptHash(PairGatheringOptions options) => PromptHash(options, PairSource.Create(options));

    static string PromptHash(PairGatheringOptions options, PairSource source)
    {
        string text = string.Join("\0", source.Mode, source.PromptText, options.SystemPrompt ?? "", options.MaxOutputTokens,
            options.Temperature.ToString("R", System.Globalization.CultureInfo.InvariantCulture));
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text)))[..16];
    }

    // The filter's verdict on one input's candidates, taken in input order so duplicates are decided as an uninterrupted run decides them.
    static InputOutcome Decide(SourceItem item, Candidates candidates, PairFilter filter)
    {
        if (candidates.MalformedReply != null)
            return new InputOutcome(item.Index, [], [new RejectedPair(RejectReason.Malformed, "", candidates.MalformedReply)], candidates.Malformed);
        if (candidates.Pairs.Count == 0)
            return new InputOutcome(item.Index, [], [new RejectedPair(RejectReason.Empty, "", "")], candidates.Malformed);
        var kept = new List<KeptPair>();
        var rejected = new List<RejectedPair>();
        foreach (var (question, answer, cut) in candidates.Pairs)
        {
            if (filter.Keep(question, answer, cut) is { } reason) rejected.Add(new RejectedPair(reason, question, answer));
            else kept.Add(new KeptPair(question, answer, item.Source));
        }
        return new InputOutcome(item.Index, kept, rejected, candidates.Malformed);
    }
}
