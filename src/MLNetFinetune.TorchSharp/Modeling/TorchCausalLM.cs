using MLNetFinetune.Generation;
using MLNetFinetune.Tokenization;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>
/// A model and its tokenizer for inference with TorchSharp: generation through the shared <see cref="DecodeLoop"/> with
/// a KV cache, and batched scoring of texts and responses. Does not own the model.
/// </summary>
public sealed class TorchCausalLM(TransformerForCausalLM model, TextTokenizer tokenizer) : IDecoderModel
{
    /// <summary>The model.</summary>
    public TransformerForCausalLM Model { get; } = model;

    /// <inheritdoc />
    public TextTokenizer Tokenizer { get; } = tokenizer;

    /// <inheritdoc />
    public int LogitsSize => Model.Config.VocabSize;

    /// <inheritdoc />
    public int ContextLength => Model.Config.MaxPositionEmbeddings;

    /// <inheritdoc />
    public long EosId => Tokenizer.EosId ?? Model.Config.EosTokenId;

    /// <inheritdoc />
    public IReadOnlyCollection<long> EndIds => [.. Model.Config.EosTokenIds.Select(id => (long)id).Append(EosId).Distinct()];

    /// <inheritdoc />
    public long PadId => Tokenizer.PadId ?? Model.Config.EosTokenId;

    Device Device => Model.parameters().First().device;

    /// <summary>Continuations of <paramref name="prompts"/>, <paramref name="batchSize"/> at a time, with a KV cache.</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options = null, int batchSize = 1) =>
        DecodeLoop.Generate(this, prompts, options ?? new GenerationOptions(), batchSize);

    /// <summary>
    /// Continuations without a KV cache, through the same decode loop: every step runs each whole sequence again. Only a
    /// reference for tests of the cache; use <see cref="Generate"/>.
    /// </summary>
    public IReadOnlyList<string> GenerateUncached(IReadOnlyList<string> prompts, GenerationOptions options) =>
        DecodeLoop.Generate(new Uncached(this), prompts, options);

    /// <summary>
    /// Mean loss of each example's labelled targets (labels aligned with the ids, −100 where no loss is taken), in batches
    /// padded on the right (causal attention never looks right, so padding changes nothing). NaN for an example with no target.
    /// </summary>
    public double[] MeanLosses(IReadOnlyList<(int[] Ids, int[] Labels)> examples, int batchSize = 16)
    {
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize), "The batch size must be positive.");
        var result = new double[examples.Count];
        Array.Fill(result, double.NaN);
        // Examples with no target (fewer than two tokens, or all labels ignored) stay NaN and never reach the model.
        var scored = Enumerable.Range(0, examples.Count).Where(i => examples[i].Labels.Skip(1).Any(l => l != TokenSequences.IgnoreIndex)).ToList();
        Model.eval();
        using var _ = no_grad();
        for (int start = 0; start < scored.Count; start += batchSize)
        {
            using var scope = NewDisposeScope();
            var rows = scored.Skip(start).Take(batchSize).ToList();
            var chunk = rows.Select(i => examples[i]).ToList();
            var batch = TokenBatch.Pad(chunk.Select(e => (IReadOnlyList<int>)e.Ids).ToList(), (int)PadId, labels: chunk.Select(e => (IReadOnlyList<int>)e.Labels).ToList());
            long[] shape = [batch.Rows, batch.Length];
            var ids = tensor(batch.Ids, shape).to(int64, Device);
            var labels = tensor(batch.Labels!, shape).to(int64, Device);
            var losses = Model.Loss(ids, labels, nn.Reduction.None).view(batch.Rows, batch.Length).cpu();
            var sums = losses.sum(1).data<float>().ToArray();
            for (int r = 0; r < chunk.Count; r++)
            {
                result[rows[r]] = sums[r] / chunk[r].Labels.Skip(1).Count(l => l != TokenSequences.IgnoreIndex);
            }
        }
        return result;
    }

    /// <inheritdoc />
    IDecoderSession IDecoderModel.Start(int batch, int capacity) => new Session(this, Model.NewCache(batch, capacity));

    // The last-position logits of ids [batch, seq] after what the cache holds (or from position 0 without one).
    float[] LastLogits(long[] ids, long[] positions, long[] mask, int batch, KeyValueCache? cache)
    {
        Model.eval();
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        long seq = ids.Length / batch;
        var input = tensor(ids, [batch, seq], device: Device);
        var position = tensor(positions, [batch, seq], device: Device);
        // Rows without padding attend causally (the model's default); padded rows need the mask.
        Tensor? attention = mask.All(m => m == 1) ? null : AttentionMasks.Padded(tensor(mask, [batch, mask.Length / batch], device: Device), seq);
        var logits = Model.Forward(input, position, attention, cache);
        return logits[.., -1].contiguous().cpu().data<float>().ToArray();
    }

    sealed class Session(TorchCausalLM owner, KeyValueCache cache) : IDecoderSession
    {
        public float[] Step(long[] ids, long[] positions, long[] mask, int batch) => owner.LastLogits(ids, positions, mask, batch, cache);

        public void Dispose() => cache.Dispose();
    }

    // The same model seen by the decode loop without a cache: each step appends the new tokens and runs every row whole.
    sealed class Uncached(TorchCausalLM owner) : IDecoderModel
    {
        public TextTokenizer Tokenizer => owner.Tokenizer;
        public int LogitsSize => owner.LogitsSize;
        public int ContextLength => owner.ContextLength;
        public long EosId => owner.EosId;
        public IReadOnlyCollection<long> EndIds => owner.EndIds;
        public long PadId => owner.PadId;
        public IDecoderSession Start(int batch, int capacity) => new Session(owner, batch);

        sealed class Session(TorchCausalLM owner, int batch) : IDecoderSession
        {
            readonly List<long>[] _ids = Enumerable.Range(0, batch).Select(_ => new List<long>()).ToArray();
            readonly List<long>[] _positions = Enumerable.Range(0, batch).Select(_ => new List<long>()).ToArray();

            public float[] Step(long[] ids, long[] positions, long[] mask, int rows)
            {
                int seq = ids.Length / rows;
                for (int r = 0; r < rows; r++)
                {
                    _ids[r].AddRange(ids.AsSpan(r * seq, seq));
                    _positions[r].AddRange(positions.AsSpan(r * seq, seq));
                }
                return owner.LastLogits([.. _ids.SelectMany(i => i)], [.. _positions.SelectMany(p => p)], mask, rows, cache: null);
            }

            public void Dispose() { }
        }
    }
}
