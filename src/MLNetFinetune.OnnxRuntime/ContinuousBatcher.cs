using System.Threading.Channels;
using Microsoft.ML.OnnxRuntime;
using MLNetFinetune.Generation;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>How a batched generation ended: its text, <c>stop</c> (end of text or a stop string) or <c>length</c> (the token limit), and its token counts.</summary>
public sealed record BatchedResult(string Text, string FinishReason, int PromptTokens, int CompletionTokens);

/// <summary>One request in a <see cref="ContinuousBatcher"/>: its text as it comes (when streamed) and its result.</summary>
public sealed class BatchedGeneration
{
    readonly Channel<string> _pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    readonly TaskCompletionSource<BatchedResult> _result = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly TextStreamer _streamer;

    internal BatchedGeneration(long[] prompt, GenerationOptions options, bool streaming, CancellationToken cancellationToken)
    {
        Prompt = prompt;
        Options = options;
        Streaming = streaming;
        Cancellation = cancellationToken;
        Random = new Random(options.Seed);
        _streamer = new TextStreamer(options.StopSequences);
    }

    /// <summary>The text in pieces as it is generated (only when submitted as streamed); complete when the generation ends.</summary>
    public ChannelReader<string> Pieces => _pieces.Reader;

    /// <summary>The result; cancelled when the request's token fires, faulted when the model fails.</summary>
    public Task<BatchedResult> Completion => _result.Task;

    internal bool Streaming { get; }
    internal long[] Prompt { get; }
    internal GenerationOptions Options { get; }
    internal CancellationToken Cancellation { get; }
    internal Random Random { get; }
    internal List<long> Generated { get; } = [];

    /// <summary>Tokens of this row in the batch's cache: the prompt, then each fed token.</summary>
    internal int Cached { get; set; }

    /// <summary>The token chosen last, fed at the next decode step.</summary>
    internal long Pending { get; set; }

    internal void Send(string text)
    {
        if (!Streaming) return;
        string piece = _streamer.Next(text, final: false);
        if (piece.Length > 0) _pieces.Writer.TryWrite(piece);
    }

    internal void Finish(string text, string reason, int completionTokens)
    {
        if (Streaming)
        {
            string piece = _streamer.Next(text, final: true);
            if (piece.Length > 0) _pieces.Writer.TryWrite(piece);
        }
        _pieces.Writer.TryComplete();
        _result.TrySetResult(new BatchedResult(text, reason, Prompt.Length, completionTokens));
    }

    internal void Fail(Exception error)
    {
        _pieces.Writer.TryComplete(error);
        if (error is OperationCanceledException) _result.TrySetCanceled(Cancellation);
        else _result.TrySetException(error);
    }
}

/// <summary>
/// Continuous batching over an exported model: requests join and leave the running batch between decode steps, so
/// concurrent requests share each forward pass (vLLM's scheduling, without paged memory). Joining requests are
/// prefilled together, then their caches are merged into the batch's; a finished or cancelled request leaves at the
/// next step and the cache is compacted. Rows are right-aligned in the cache: each keeps its own positions and the
/// mask hides the places before its first token. One thread runs the model; requests come from any thread. The batch's
/// cache lives in host memory, where joins and leaves merge it, also when the model binds its cache to device memory
/// (<see cref="OnnxCausalLM.IoBinding"/>): ONNX Runtime 1.31 copies between devices (<see cref="OrtEnv.CopyTensors"/>)
/// only for execution-provider libraries registered with the environment, which a provider appended to session options
/// is not, so on CUDA each batched step still takes the cache through host memory.
/// </summary>
public sealed class ContinuousBatcher : IDisposable
{
    readonly OnnxCausalLM _model;
    readonly Channel<BatchedGeneration> _queue = Channel.CreateUnbounded<BatchedGeneration>(new UnboundedChannelOptions { SingleReader = true });
    readonly Thread _thread;
    readonly HashSet<long> _ends;
    int _waiting, _running;
    long _steps;

    /// <summary>
    /// Starts the batching thread over <paramref name="model"/>, decoding at most <paramref name="maxBatch"/> requests
    /// together and prefilling joining requests in batches of at most <paramref name="maxPrefillTokens"/> (padded) tokens.
    /// </summary>
    public ContinuousBatcher(OnnxCausalLM model, int maxBatch = 32, int maxPrefillTokens = 1024)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPrefillTokens, 1);
        _model = model;
        MaxBatch = maxBatch;
        MaxPrefillTokens = maxPrefillTokens;
        _ends = ((IDecoderModel)model).EndIds.ToHashSet();
        _thread = new Thread(Loop) { IsBackground = true, Name = "continuous-batching" };
        _thread.Start();
    }

    /// <summary>Most requests decoded in one step; more wait their turn.</summary>
    public int MaxBatch { get; }

    /// <summary>Most tokens (prompts padded to the longest) prefilled in one pass; a longer prompt is prefilled alone.</summary>
    public int MaxPrefillTokens { get; }

    /// <summary>Requests in the running batch now.</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>Requests waiting to join the batch.</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>Decode steps run so far (each advances every running request by one token).</summary>
    public long DecodeSteps => Interlocked.Read(ref _steps);

    /// <summary>
    /// Queues a generation after <paramref name="prompt"/> (token ids; the caller checks them against the context). With
    /// <paramref name="streaming"/>, <see cref="BatchedGeneration.Pieces"/> carries the text as it comes.
    /// </summary>
    public BatchedGeneration Submit(long[] prompt, GenerationOptions options, bool streaming = false, CancellationToken cancellationToken = default)
    {
        options.Validate();
        if (prompt.Length == 0) throw new ArgumentException("The prompt is empty.", nameof(prompt));
        var generation = new BatchedGeneration(prompt, options, streaming, cancellationToken);
        Interlocked.Increment(ref _waiting);
        if (!_queue.Writer.TryWrite(generation))
        {
            Interlocked.Decrement(ref _waiting);
            throw new ObjectDisposedException(nameof(ContinuousBatcher), "The batcher is shutting down.");
        }
        return generation;
    }

    /// <summary>Stops taking requests, lets the queued and running ones finish, and stops the thread.</summary>
    public void Dispose()
    {
        _queue.Writer.TryComplete();
        _thread.Join();
    }

    void Loop()
    {
        var rows = new List<BatchedGeneration>();
        OrtValue[]? cache = null;
        int length = 0; // positions in the cache; row r holds its tokens in the last rows[r].Cached of them
        while (rows.Count > 0 || _queue.Reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            var joining = new List<BatchedGeneration>();
            // Joining requests are prefilled together up to MaxPrefillTokens (padded), so a crowd arriving at once neither
            // stalls the running rows for long nor makes one huge logits tensor; the rest join after the next step.
            while (rows.Count + joining.Count < MaxBatch && (joining.Count == 0 || _queue.Reader.TryPeek(out var peek)
                       && (joining.Count + 1) * Math.Max(peek.Prompt.Length, joining.Max(j => j.Prompt.Length)) <= MaxPrefillTokens)
                   && _queue.Reader.TryRead(out var next))
            {
                Interlocked.Decrement(ref _waiting);
                if (next.Cancellation.IsCancellationRequested) next.Fail(new OperationCanceledException(next.Cancellation));
                else if (next.Options.MaxNewTokens == 0) next.Finish("", "length", 0);
                else joining.Add(next);
            }
            try
            {
                if (joining.Count > 0) (cache, length) = Join(rows, cache, length, joining);
                if (rows.Count > 0) (cache, length) = DecodeStep(rows, cache!, length);
            }
            catch (Exception e)
            {
                // The model failed (out of memory, a broken graph): every request in flight hears why; the loop goes on.
                foreach (var row in rows.Concat(joining)) row.Fail(e);
                rows.Clear();
                Release(cache);
                (cache, length) = (null, 0);
            }
            Volatile.Write(ref _running, rows.Count);
        }
        Release(cache);
    }

    // Prefills the joining requests together (left-padded), chooses their first tokens and merges the survivors' caches into the batch.
    (OrtValue[]? Cache, int Length) Join(List<BatchedGeneration> rows, OrtValue[]? cache, int length, List<BatchedGeneration> joining)
    {
        int n = joining.Count, longest = joining.Max(j => j.Prompt.Length);
        var (ids, positions, mask) = DecodeLoop.LeftPadded([.. joining.Select(j => j.Prompt)], ((IDecoderModel)_model).PadId, longest);
        foreach (var row in joining) row.Cached = row.Prompt.Length;
        var (logits, prefilled) = _model.Forward(ids, positions, mask, n, past: null, lastOnly: true, hostCache: true);
        try
        {
            var sources = rows.Select((row, i) => (cache!, i, length, row.Cached)).ToList();
            int vocab = _model.Config.VocabSize, before = rows.Count;
            for (int r = 0; r < n; r++)
                if (Advance(joining[r], logits.AsSpan(r * vocab, vocab)))
                {
                    rows.Add(joining[r]);
                    sources.Add((prefilled, r, longest, joining[r].Cached));
                }
            if (rows.Count == before) return (cache, length); // every joining request ended at its first token
            var merged = Gather(sources);
            Release(cache);
            return merged;
        }
        finally
        {
            Release(prefilled);
        }
    }

    // One token for every running request; finished ones leave and the cache is compacted around the rest.
    (OrtValue[]? Cache, int Length) DecodeStep(List<BatchedGeneration> rows, OrtValue[] cache, int length)
    {
        int batch = rows.Count, vocab = _model.Config.VocabSize;
        var ids = new long[batch];
        var positions = new long[batch];
        var mask = new long[batch * (length + 1)];
        for (int r = 0; r < batch; r++)
        {
            ids[r] = rows[r].Pending;
            positions[r] = rows[r].Cached;
            mask.AsSpan(r * (length + 1) + length - rows[r].Cached, rows[r].Cached + 1).Fill(1);
            rows[r].Cached++;
        }
        var (logits, next) = _model.Forward(ids, positions, mask, batch, cache, lastOnly: true, hostCache: true);
        Release(cache);
        Interlocked.Increment(ref _steps);
        length++;
        var sources = new List<(OrtValue[], int, int, int)>();
        var staying = new List<BatchedGeneration>();
        for (int r = 0; r < batch; r++)
            if (Advance(rows[r], logits.AsSpan(r * vocab, vocab)))
            {
                staying.Add(rows[r]);
                sources.Add((next, r, length, rows[r].Cached));
            }
        if (staying.Count == batch) return (next, length);
        rows.Clear();
        rows.AddRange(staying);
        try
        {
            return staying.Count == 0 ? (null, 0) : Gather(sources);
        }
        finally
        {
            Release(next);
        }
    }

    // Chooses a row's next token from its logits; false when the row is done (end of text, a stop string, its limit, or cancelled).
    bool Advance(BatchedGeneration row, ReadOnlySpan<float> logits)
    {
        if (row.Cancellation.IsCancellationRequested)
        {
            row.Fail(new OperationCanceledException(row.Cancellation));
            return false;
        }
        var options = row.Options;
        long token = Sampling.Next(logits, options, row.Random, row.Prompt.Concat(row.Generated), _model.Tokenizer.VocabSize);
        if (_ends.Contains(token) && !options.IgnoreEos)
        {
            row.Finish(Decode(row), "stop", row.Generated.Count + 1);
            return false;
        }
        row.Generated.Add(token);
        // The text is decoded each step only when something reads it: a stream, or stop strings to look for.
        bool watched = row.Streaming || options.StopSequences.Count > 0;
        string? text = watched ? Decode(row) : null;
        var (cut, stopped) = text != null ? Sampling.CutAtStop(text, options.StopSequences) : ("", false);
        if (stopped || row.Generated.Count >= options.MaxNewTokens)
        {
            row.Finish(stopped ? cut : Sampling.CutAtStop(text ?? Decode(row), options.StopSequences).Text, stopped ? "stop" : "length", row.Generated.Count);
            return false;
        }
        if (text != null) row.Send(text);
        row.Pending = token;
        return true;
    }

    string Decode(BatchedGeneration row) => _model.Tokenizer.Decode(row.Generated.Select(t => (int)t));

    // A new cache holding the given rows (source cache, its row, its length, the row's token count), right-aligned in
    // as many positions as the longest row needs. The places before a row's tokens are zeroed: the mask hides them,
    // and a masked NaN would still poison attention (0 × NaN).
    static (OrtValue[] Cache, int Length) Gather(List<(OrtValue[] Cache, int Row, int Length, int Tokens)> rows)
    {
        int length = rows.Max(r => r.Tokens), values = rows[0].Cache.Length;
        var gathered = new OrtValue[values];
        for (int v = 0; v < values; v++)
        {
            var info = rows[0].Cache[v].GetTensorTypeAndShape();
            long[] shape = info.Shape;
            int heads = (int)shape[1], headDim = (int)shape[3];
            var target = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, info.ElementDataType, [rows.Count, heads, length, headDim]);
            gathered[v] = target;
            var into = target.GetTensorMutableRawData();
            into.Clear();
            int element = (int)(into.Length / ((long)rows.Count * heads * length * headDim));
            for (int i = 0; i < rows.Count; i++)
            {
                var (source, row, sourceLength, tokens) = rows[i];
                var from = source[v].GetTensorMutableRawData();
                int bytes = tokens * headDim * element;
                for (int h = 0; h < heads; h++)
                {
                    long src = (((long)row * heads + h) * sourceLength + sourceLength - tokens) * headDim * element;
                    long dst = (((long)i * heads + h) * length + length - tokens) * headDim * element;
                    from.Slice((int)src, bytes).CopyTo(into.Slice((int)dst, bytes));
                }
            }
        }
        return (gathered, length);
    }

    static void Release(OrtValue[]? cache)
    {
        if (cache != null) foreach (var v in cache) v.Dispose();
    }
}
