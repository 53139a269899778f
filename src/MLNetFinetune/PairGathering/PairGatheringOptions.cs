using MLNetFinetune.Data;

namespace MLNetFinetune.PairGathering;

/// <summary>
/// How input/output pairs are gathered from a large model (the course lab's steps 1–2). Two sources, one of them:
/// <list type="bullet">
/// <item><see cref="InputsPath"/> with <see cref="InputTemplate"/>: the model answers each rendered input (distillation);</item>
/// <item><see cref="Documents"/> with <see cref="Task"/>: the model writes question/answer pairs about each document (self-instruct).</item>
/// </list>
/// The request settings (system prompt, tokens, temperature, concurrency, retries) also serve <c>try</c> and <c>score</c>.
/// </summary>
public sealed record PairGatheringOptions
{
    /// <summary>
    /// The pairs file (JSON Lines) the run appends to; <see cref="PairGatherer.LedgerSuffix"/> beside it records every input
    /// asked, so a rerun continues where the last one stopped. Required by <see cref="PairGatherer.GatherAsync"/>.
    /// </summary>
    public string? OutputPath { get; init; }

    /// <summary>Inputs to answer: a <c>.jsonl</c> or <c>.csv</c> file (optionally .gz/.zst) holding the template's fields.</summary>
    public string? InputsPath { get; init; }

    /// <summary>
    /// What each input becomes before the model sees it, e.g. <c>Passage: {passage}\nQuestion: {question}</c>. The rendered
    /// text is the pair's question, so finetuning on the pairs teaches the small model what the large one was asked.
    /// Default <c>{question}</c>.
    /// </summary>
    public PromptTemplate InputTemplate { get; init; } = new("{question}");

    /// <summary>Documents to write pairs about: a corpus file, folder or glob, read as <c>ml.Data.LoadCorpus</c> reads it.</summary>
    public CorpusOptions? Documents { get; init; }

    /// <summary>
    /// With <see cref="Documents"/>: what the pairs are for, in words (<c>Write questions a new user of the library would
    /// ask, answered from the document.</c>). The document and the request for JSON are added after it.
    /// </summary>
    public string? Task { get; init; }

    /// <summary>With <see cref="Documents"/>: how many pairs to ask for per document (more are cut). Default 3.</summary>
    public int PairsPerDocument { get; init; } = 3;

    /// <summary>With <see cref="Documents"/>: documents are cut to this many characters, so one long file cannot overflow the model's context. Default 8,000.</summary>
    public int MaxDocumentChars { get; init; } = 8_000;

    /// <summary>A system message sent before every request (part of the prompt hash). Default none.</summary>
    public string? SystemPrompt { get; init; }

    /// <summary>The model name recorded with every pair. Default: the client's (<see cref="Microsoft.Extensions.AI.ChatClientMetadata.DefaultModelId"/>).</summary>
    public string? ModelId { get; init; }

    /// <summary>Stop after this many inputs or documents (a rerun with a larger limit continues). Default: all.</summary>
    public long? MaxInputs { get; init; }

    /// <summary>The longest answer the model may write, in tokens. Default 512.</summary>
    public int MaxOutputTokens { get; init; } = 512;

    /// <summary>Sampling temperature; 0 (default) makes reruns and resumes ask for the same answers.</summary>
    public float Temperature { get; init; }

    /// <summary>Requests in flight at once. Default 4.</summary>
    public int Concurrency { get; init; } = 4;

    /// <summary>Retries of a request that failed with 429 (rate limit) or a 5xx status, with exponential backoff and jitter. Default 6.</summary>
    public int MaxRetries { get; init; } = 6;

    /// <summary>The wait before the first retry; each further retry waits about twice as long. Default 1 s.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Pairs at least this similar to a kept one (Jaccard similarity of the word 3-grams of question and answer, after
    /// lower-casing and dropping punctuation) are dropped as near duplicates. Default 0.9. Inputs that share a long context
    /// (one passage, several questions) look alike; raise it, or give 1 to drop exact duplicates only.
    /// </summary>
    public double NearDuplicateThreshold { get; init; } = 0.9;

    /// <summary>Answers longer than this many characters, or cut at <see cref="MaxOutputTokens"/>, are dropped as too long. Default 2,000.</summary>
    public int MaxAnswerChars { get; init; } = 2_000;

    /// <summary>Answers that start with one of these (case-insensitive, any apostrophe) are dropped as refusals.</summary>
    public IReadOnlyList<string> RefusalPrefixes { get; init; } =
        ["I'm sorry", "I am sorry", "Sorry,", "I apologize", "I cannot", "I can't", "I can not", "I'm unable", "I am unable", "I won't", "As an AI"];

    /// <summary>
    /// Continue a pairs file made with another prompt or model (its ledger says which). Default false: such a file is
    /// refused, since a resumed run would then differ from an uninterrupted one. Each pair records its own prompt hash and model.
    /// </summary>
    public bool AllowSettingsChange { get; init; }

    /// <summary>Receives progress after every batch of inputs.</summary>
    public IProgress<PairGatheringProgress>? Progress { get; init; }
}

/// <summary>Where a gathering run stands.</summary>
/// <param name="Done">Inputs finished, those of earlier runs included.</param>
/// <param name="Total">Inputs the run will have finished at the end.</param>
/// <param name="Kept">Pairs in the file.</param>
/// <param name="Rejected">Pairs and inputs dropped, by any reason.</param>
/// <param name="PairsPerSecond">Pairs kept per second in this run.</param>
/// <param name="Elapsed">Time since this run started.</param>
/// <param name="Remaining">Estimated time to the end, from this run's pace (null before the first batch).</param>
public sealed record PairGatheringProgress(long Done, long Total, long Kept, long Rejected, double PairsPerSecond, TimeSpan Elapsed, TimeSpan? Remaining)
{
    /// <inheritdoc />
    public override string ToString() => FormattableString.Invariant(
        $"pairs: {Done}/{Total} inputs, {Kept} kept, {Rejected} rejected, {PairsPerSecond:F2} pairs/s") + (Remaining is { } r ? $", ETA {r:hh\\:mm\\:ss}" : "");
}

/// <summary>One input tried with the prompt: what the model was asked and what it answered.</summary>
/// <param name="Input">The rendered input (or, for documents, the document).</param>
/// <param name="Output">The model's reply, as written.</param>
public sealed record PromptTrial(string Input, string Output);
