using MLNetFinetune.Generation;
using MLNetFinetune.Tokenization;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>
/// A model and its tokenizer for inference with TorchSharp: generation through the shared <see cref="DecodeLoop"/> with
/// a KV cache, and batched scoring of texts and responses. Does not own the model.
/// </summary>
public sealed class TorchCausalLM(GptNeoXForCausalLM model, TextTokenizer tokenizer) : IDecoderModel
{
    /// <summary>The model.</summary>
    public GptNeoXForCausalLM Model { get; } = model;

    /// <inheritdoc />
    public TextTokenizer Tokenizer { get; } = tokenizer;

    /// <inheritdoc />
    public int LogitsSize => Model.Config.VocabSize;

    /// <inheritdoc />
    public int ContextLength => Model.Config.MaxPositionEmbeddings;

    /// <inheritdoc />
    public long EosId => Tokenizer.EosId ?? Model.Config.EosTokenId;

    /// <inheritdoc />
    public long PadId => Tokenizer.PadId ?? Model.Config.EosTokenId;

    Device Device => Model.parameters().First().device;

    /// <summary>Continuations of <paramref name="prompts"/>, <paramref name="batchSize"/> at a time, with a KV cache.</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options = null, int batchSize = 1) =>
        DecodeLoop.Generate(this, prompts, options ?? new GenerationOptions(), batchSize);

    /// <summary>
    /// Greedy (or sampled) continuation without a KV cache: every step runs the whole sequence again. Only a reference
    /// for tests and the benchmark's speedup; use <see cref="Generate"/>.
    /// </summary>
    public string GenerateUncached(string prompt, GenerationOptions options)
    {
        options.Validate();
        var ids = DecodeLoop.EncodePrompt(this, prompt, 0, options.MaxNewTokens).ToList();
        int start = ids.Count;
        var random = new Random(options.Seed);
        Model.eval();
        using var _ = no_grad();
        for (int i = 0; i < options.MaxNewTokens; i++)
        {
            using var scope = NewDisposeScope();
            var logits = Model.forward(tensor(ids.ToArray(), [1, ids.Count], dtype: int64, device: Device))[0, -1];
            long next = Sampling.Next(logits.cpu().data<float>().ToArray(), options, random, ids, Tokenizer.VocabSize);
            if (next == EosId) break;
            ids.Add(next);
            if (options.StopSequences.Count > 0 && Sampling.CutAtStop(Tokenizer.Decode(ids.Skip(start).Select(t => (int)t)), options.StopSequences).Stopped) break;
        }
        return Sampling.CutAtStop(Tokenizer.Decode(ids.Skip(start).Select(t => (int)t)), options.StopSequences).Text;
    }

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

    sealed class Session(TorchCausalLM owner, KeyValueCache cache) : IDecoderSession
    {
        public float[] Step(long[] ids, long[] positions, long[] mask, int batch)
        {
            var model = owner.Model;
            model.eval();
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var device = owner.Device;
            long seq = ids.Length / batch;
            var input = tensor(ids, [batch, seq], device: device);
            var position = tensor(positions, [batch, seq], device: device);
            // Rows without padding attend causally (the model's default); padded rows need the mask.
            Tensor? attention = mask.All(m => m == 1) ? null : AttentionMasks.Padded(tensor(mask, [batch, mask.Length / batch], device: device), seq);
            var logits = model.Forward(input, position, attention, cache);
            return logits[.., -1].contiguous().cpu().data<float>().ToArray();
        }

        public void Dispose() => cache.Dispose();
    }
}
