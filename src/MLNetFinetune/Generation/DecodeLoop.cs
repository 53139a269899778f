using System.Runtime.CompilerServices;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Generation;

/// <summary>
/// A causal language model as the decode loop sees it, whatever runs it (TorchSharp, ONNX Runtime): a tokenizer, the
/// shape of its logits, and steps over a batch that keep their own KV cache.
/// </summary>
public interface IDecoderModel
{
    /// <summary>The tokenizer.</summary>
    TextTokenizer Tokenizer { get; }

    /// <summary>Logits per position (the embedding rows; may exceed the tokenizer's vocabulary).</summary>
    int LogitsSize { get; }

    /// <summary>The longest sequence the model takes (max_position_embeddings).</summary>
    int ContextLength { get; }

    /// <summary>The end-of-text id that ends a row.</summary>
    long EosId { get; }

    /// <summary>Every id that ends a row: end of text and the config's eos_token_id list (Llama 3 ends a turn or the text), as generate stops on.</summary>
    IReadOnlyCollection<long> EndIds => [EosId];

    /// <summary>The id put in padded places.</summary>
    long PadId { get; }

    /// <summary>Starts a generation of <paramref name="batch"/> rows of at most <paramref name="capacity"/> tokens each.</summary>
    IDecoderSession Start(int batch, int capacity);
}

/// <summary>One generation's state on a model: its KV cache. Dispose it to free the cache.</summary>
public interface IDecoderSession : IDisposable
{
    /// <summary>
    /// Runs <paramref name="ids"/> and <paramref name="positions"/> <c>[batch, seq]</c> after the cached tokens, with
    /// <paramref name="mask"/> <c>[batch, past + seq]</c> (1 real, 0 padding), appends them to the cache and returns the
    /// logits of each row's last position <c>[batch, LogitsSize]</c>, valid until the next step (a session may fill the
    /// same array each step).
    /// </summary>
    float[] Step(long[] ids, long[] positions, long[] mask, int batch);
}

/// <summary>
/// The one decode loop every runtime shares: left-padded batches (the mask hides the padding, positions count real
/// tokens only), greedy or sampled choice, end of text, stop strings, streaming, and the over-long-prompt rule.
/// </summary>
public static class DecodeLoop
{
    /// <summary>Generates continuations of several prompts in one batch; rows stop at end of text or a stop string.</summary>
    public static IReadOnlyList<string> Generate(IDecoderModel model, IReadOnlyList<string> prompts, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        return Batch(model, prompts, options ?? new GenerationOptions(), 0, cancellationToken);
    }

    // One batch whose prompts are numbered from firstRow in errors.
    static string[] Batch(IDecoderModel model, IReadOnlyList<string> prompts, GenerationOptions options, int firstRow, CancellationToken cancellationToken)
    {
        var results = new string[prompts.Count];
        foreach (var (row, text) in Run(model, prompts, options, cancellationToken, partial: false, firstRow))
            if (row >= 0) results[row] = text;
        return results;
    }

    /// <summary>
    /// Generates in batches of <paramref name="batchSize"/> prompts; results are in prompt order and, for greedy
    /// decoding, the same as one prompt at a time.
    /// </summary>
    public static IReadOnlyList<string> Generate(IDecoderModel model, IReadOnlyList<string> prompts, GenerationOptions options, int batchSize, CancellationToken cancellationToken = default)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), "The batch size must be positive.");
        var results = new List<string>(prompts.Count);
        for (int start = 0; start < prompts.Count; start += batchSize)
            results.AddRange(Batch(model, prompts.Skip(start).Take(batchSize).ToArray(), options, start, cancellationToken));
        return results;
    }

    /// <summary>Streams one prompt's continuation as text pieces; their concatenation is what <see cref="Generate(IDecoderModel, IReadOnlyList{string}, GenerationOptions?, CancellationToken)"/> returns.</summary>
    public static async IAsyncEnumerable<string> Stream(IDecoderModel model, string prompt, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        options.Validate();
        var streamer = new TextStreamer(options.StopSequences);
        foreach (var (row, text) in Run(model, [prompt], options, cancellationToken, partial: true))
        {
            string piece = streamer.Next(text, final: row >= 0);
            if (piece.Length > 0) yield return piece;
            await Task.Yield();
        }
    }

    static long[] EncodePrompt(IDecoderModel model, string prompt, int row, int maxNewTokens) =>
        CheckPrompt(model, model.Tokenizer.EncodeSequence(prompt).Select(i => (long)i).ToArray(), row, maxNewTokens);

    /// <summary>A prompt's ids, or an error naming the row when it is empty or leaves no room for the new tokens.</summary>
    public static long[] CheckPrompt(IDecoderModel model, long[] ids, int row, int maxNewTokens)
    {
        if (ids.Length == 0) throw new ArgumentException($"Prompt {row} is empty.");
        if (ids.Length + maxNewTokens > model.ContextLength)
            throw new ArgumentException($"Prompt {row} has {ids.Length} tokens; with {maxNewTokens} new ones that exceeds the model's context of {model.ContextLength}.");
        return ids;
    }

    // Yields (-1, partial text of row 0) after each step when partial, and (row, final text) as rows finish.
    static IEnumerable<(int Row, string Text)> Run(IDecoderModel model, IReadOnlyList<string> prompts, GenerationOptions options, CancellationToken cancellationToken,
        bool partial, int firstRow = 0)
    {
        options.Validate();
        var encoded = prompts.Select((p, r) => EncodePrompt(model, p, firstRow + r, options.MaxNewTokens)).ToArray();
        foreach (var (row, tokens, _) in Tokens(model, encoded, options, cancellationToken, partial))
            yield return (row, row < 0 ? Decode(model, tokens) : Finish(model, tokens, options));
    }

    /// <summary>
    /// Generates after prompts given as token ids (checking a model against another implementation token for token):
    /// each row's new ids, ending with end of text when the row stopped there (as Hugging Face's generate returns them).
    /// </summary>
    public static IReadOnlyList<long[]> GenerateIds(IDecoderModel model, IReadOnlyList<long[]> prompts, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        options.Validate();
        for (int r = 0; r < prompts.Count; r++)
        {
            CheckPrompt(model, prompts[r], r, options.MaxNewTokens);
            long[] outside = prompts[r].Where(id => id < 0 || id >= model.LogitsSize).ToArray();
            if (outside.Length > 0)
                throw new ArgumentOutOfRangeException(nameof(prompts), $"Prompt {r} has token id {outside[0]}, outside the model's vocabulary of {model.LogitsSize}.");
        }
        var results = new long[prompts.Count][];
        foreach (var (row, tokens, end) in Tokens(model, prompts.ToArray(), options, cancellationToken, partial: false))
            if (row >= 0) results[row] = end is { } id ? [.. tokens, id] : [.. tokens];
        return results;
    }

    // The loop itself, over token ids: yields (-1, tokens of row 0 so far, null) after each step when partial, and
    // (row, its new tokens, the end id it stopped at or null) as rows finish.
    static IEnumerable<(int Row, List<long> Tokens, long? End)> Tokens(IDecoderModel model, long[][] encoded, GenerationOptions options,
        CancellationToken cancellationToken, bool partial)
    {
        int batch = encoded.Length;
        if (batch == 0) yield break;
        var generated = Enumerable.Range(0, batch).Select(_ => new List<long>()).ToArray();
        if (options.MaxNewTokens == 0)
        {
            for (int r = 0; r < batch; r++) yield return (r, generated[r], null);
            yield break;
        }
        int longest = encoded.Max(e => e.Length);
        long pad = model.PadId;
        var ends = model.EndIds.ToHashSet();
        int capacity = longest + options.MaxNewTokens;
        var (ids, positions, mask) = LeftPadded(encoded, pad, capacity);
        var realTokens = encoded.Select(e => e.Length).ToArray();
        var done = new bool[batch];
        var random = new Random(options.Seed);
        int allowed = model.Tokenizer.VocabSize, vocab = model.LogitsSize;
        using var session = model.Start(batch, capacity);
        int filled = longest;
        for (int step = 0; step < options.MaxNewTokens && !done.All(d => d); step++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var logits = session.Step(ids, positions, MaskUpTo(mask, batch, capacity, filled), batch);
            ids = new long[batch];
            positions = new long[batch];
            for (int r = 0; r < batch; r++)
            {
                long token = pad;
                if (!done[r])
                {
                    token = Sampling.Next(logits.AsSpan(r * vocab, vocab), options, random, encoded[r].Concat(generated[r]), allowed);
                    if (ends.Contains(token) && !options.IgnoreEos)
                    {
                        done[r] = true;
                        yield return (r, generated[r], token);
                        token = pad;
                    }
                    else
                    {
                        generated[r].Add(token);
                        if (options.StopSequences.Count > 0 && Sampling.CutAtStop(Decode(model, generated[r]), options.StopSequences).Stopped)
                        {
                            done[r] = true;
                            yield return (r, generated[r], null);
                        }
                    }
                }
                ids[r] = token;
                positions[r] = realTokens[r]++;
                mask[r * capacity + filled] = 1;
            }
            filled++;
            if (partial && !done[0]) yield return (-1, generated[0], null);
        }
        for (int r = 0; r < batch; r++)
            if (!done[r]) yield return (r, generated[r], null);
    }

    /// <summary>
    /// Prompts of different lengths as one left-padded batch: <c>ids</c> and <c>positions</c> <c>[batch, longest]</c>
    /// (padding gets the pad id and position 0; positions count real tokens only) and <c>mask</c>
    /// <c>[batch, maskWidth]</c> (≥ longest), 1 over each row's real tokens and 0 elsewhere.
    /// </summary>
    public static (long[] Ids, long[] Positions, long[] Mask) LeftPadded(IReadOnlyList<long[]> prompts, long pad, int maskWidth)
    {
        int batch = prompts.Count, longest = prompts.Max(p => p.Length);
        if (maskWidth < longest) throw new ArgumentOutOfRangeException(nameof(maskWidth), $"The mask ({maskWidth}) must cover the longest prompt ({longest}).");
        var ids = new long[batch * longest];
        var positions = new long[batch * longest];
        var mask = new long[batch * maskWidth];
        for (int r = 0; r < batch; r++)
        {
            int offset = longest - prompts[r].Length;
            for (int t = 0; t < longest; t++)
            {
                ids[r * longest + t] = t < offset ? pad : prompts[r][t - offset];
                positions[r * longest + t] = Math.Max(0, t - offset);
                mask[r * maskWidth + t] = t < offset ? 0 : 1;
            }
        }
        return (ids, positions, mask);
    }

    static long[] MaskUpTo(long[] mask, int batch, int capacity, int length)
    {
        var result = new long[batch * length];
        for (int r = 0; r < batch; r++) Array.Copy(mask, r * capacity, result, r * length, length);
        return result;
    }

    static string Decode(IDecoderModel model, List<long> tokens) => model.Tokenizer.Decode(tokens.Select(t => (int)t));

    static string Finish(IDecoderModel model, List<long> tokens, GenerationOptions options) => Sampling.CutAtStop(Decode(model, tokens), options.StopSequences).Text;
}
