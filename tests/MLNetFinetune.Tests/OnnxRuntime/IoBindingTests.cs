using Microsoft.ML.OnnxRuntime;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Tests.Server;

namespace MLNetFinetune.Tests.OnnxRuntime;

/// <summary>
/// Steps through <see cref="OrtIoBinding"/> (the path CUDA takes by default) against the plain Run path, on the CPU
/// provider: the same kernels run on the same inputs, so the logits are expected to be bit-identical, and the tests
/// allow 1e-5 so that they say how far apart the paths are if they ever differ.
/// </summary>
[Collection(TorchCollection.Name)]
public class IoBindingTests(ExportedTinyModel exports) : IClassFixture<ExportedTinyModel>
{
    static void Same(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        float worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        Assert.True(worst <= 1e-5f, $"{what}: max |bound − plain| = {worst}");
    }

    static void Dispose(OrtValue[] cache)
    {
        foreach (var v in cache) v.Dispose();
    }

    // Runs a left-padded batch (prefill, then `steps` cached steps, each row feeding back a fixed token) through both
    // models and compares the logits of every step.
    static void CompareSteps(OnnxCausalLM plain, OnnxCausalLM bound, long[][] prompts, int steps)
    {
        int batch = prompts.Length, longest = prompts.Max(p => p.Length);
        var ids = new long[batch * longest];
        var positions = new long[batch * longest];
        var mask = new List<long>[batch];
        for (int r = 0; r < batch; r++)
        {
            int offset = longest - prompts[r].Length;
            mask[r] = [];
            for (int t = 0; t < longest; t++)
            {
                ids[r * longest + t] = t < offset ? 1 : prompts[r][t - offset];
                positions[r * longest + t] = Math.Max(0, t - offset);
                mask[r].Add(t < offset ? 0 : 1);
            }
        }
        long[] Mask() => [.. mask.SelectMany(m => m)];
        var (plainLogits, plainCache) = plain.Forward(ids, positions, Mask(), batch, null);
        var (boundLogits, boundCache) = bound.Forward(ids, positions, Mask(), batch, null);
        Same(plainLogits, boundLogits, "prefill");
        for (int step = 0; step < steps; step++)
        {
            long[] next = [.. Enumerable.Range(0, batch).Select(r => (long)(17 + 31 * r + 7 * step))];
            long[] at = [.. Enumerable.Range(0, batch).Select(r => (long)(prompts[r].Length + step))];
            foreach (var m in mask) m.Add(1);
            var (p, pc) = plain.Forward(next, at, Mask(), batch, plainCache);
            var (b, bc) = bound.Forward(next, at, Mask(), batch, boundCache);
            Dispose(plainCache);
            Dispose(boundCache);
            (plainCache, boundCache) = (pc, bc);
            Same(p, b, $"cached step {step + 1}");
        }
        Dispose(plainCache);
        Dispose(boundCache);
    }

    [Fact]
    public void BoundStepsGiveThePlainPathsLogitsForPrefillAndCachedSteps()
    {
        using var plain = OnnxCausalLM.Load(exports.Folder, "cpu", threads: 1, ioBinding: false);
        using var bound = OnnxCausalLM.Load(exports.Folder, "cpu", threads: 1, ioBinding: true);
        Assert.False(plain.IoBinding);
        Assert.True(bound.IoBinding);
        using (var chosen = OnnxCausalLM.Load(exports.Folder, "cpu", threads: 1))
            Assert.False(chosen.IoBinding); // on CPU the plain path is the default: it measured no slower

        CompareSteps(plain, bound, [[5, 17, 42, 99, 7, 3]], steps: 5);
        // A left-padded batch: the mask and positions go in through the binding like the ids.
        CompareSteps(plain, bound, [[5, 17, 42, 99, 7], [30, 31], [250, 11, 64]], steps: 4);
    }

    [Fact]
    public void TheDecodeLoopGeneratesTheSameTextThroughTheBinding()
    {
        using var plain = OnnxCausalLM.Load(exports.Folder, "cpu", threads: 1, ioBinding: false);
        using var bound = OnnxCausalLM.Load(exports.Folder, "cpu", threads: 1, ioBinding: true);
        string[] prompts = ["What is the", "How", "Export to ONNX with a KV cache"];
        var greedy = new GenerationOptions { MaxNewTokens = 16, IgnoreEos = true };
        var expected = plain.Generate(prompts, greedy);
        Assert.Equal(expected, bound.Generate(prompts, greedy));
        Assert.Contains(expected, text => text.Length > 0);
        var sampled = new GenerationOptions { MaxNewTokens = 16, Temperature = 1.2, TopP = 0.95, Seed = 4 };
        Assert.Equal(plain.Generate("What is the", sampled), bound.Generate("What is the", sampled));
        Assert.Equal(expected[0], string.Concat(bound.GenerateStreaming(prompts[0], greedy).ToBlockingEnumerable()));
    }

    [Fact]
    public async Task TheBatcherMergesBoundCachesAndGivesWhatItGivesWithout()
    {
        using var plain = OnnxCausalLM.Load(exports.Folder, "cpu", threads: 1, ioBinding: false);
        using var bound = OnnxCausalLM.Load(exports.Folder, "cpu", threads: 1, ioBinding: true);
        string[] prompts = ["What is the capital?", "a", "The model reads passages and answers", "Tokenizers split text", "b c d"];
        // Different lengths so that rows leave at different steps and the cache is compacted; later requests join a
        // running batch, so caches of different lengths are merged.
        var options = prompts.Select((_, i) => new GenerationOptions { MaxNewTokens = 5 + 4 * i, IgnoreEos = true, Temperature = i == 2 ? 0.8 : 0, Seed = i }).ToArray();

        async Task<string[]> Batched(OnnxCausalLM model)
        {
            using var batcher = new ContinuousBatcher(model, maxBatch: 3);
            long[] Ids(int i) => [.. model.Tokenizer.EncodeSequence(prompts[i]).Select(t => (long)t)];
            var first = Enumerable.Range(0, 2).Select(i => batcher.Submit(Ids(i), options[i])).ToList();
            var wait = DateTime.UtcNow;
            while (batcher.DecodeSteps < 2 && DateTime.UtcNow - wait < TimeSpan.FromSeconds(30)) await Task.Delay(5);
            Assert.True(batcher.DecodeSteps >= 2, "the first requests never started decoding");
            var all = first.Concat(Enumerable.Range(2, prompts.Length - 2).Select(i => batcher.Submit(Ids(i), options[i]))).ToList();
            var texts = new string[all.Count];
            for (int i = 0; i < all.Count; i++) texts[i] = (await all[i].Completion.WaitAsync(TimeSpan.FromSeconds(60))).Text;
            return texts;
        }

        var expected = await Batched(plain);
        // ORT 1.31's OrtEnv.CopyTensors has no CPU-to-CPU transfer, so on CPU the bound model's batch keeps its cache in
        // host memory (bound there) and merges it as the plain path does; the device merge needs a GPU to run.
        Assert.Equal(expected, await Batched(bound));
        for (int i = 0; i < prompts.Length; i++) Assert.Equal(bound.Generate(prompts[i], options[i]), expected[i]);
    }

    // The CPU provider runs the float16 export (ORT inserts casts around the kernels it has only in float32), so the
    // float16 cache goes through the binding here too.
    [Fact]
    public void AFloat16ExportRunsThroughTheBinding()
    {
        using var plain = OnnxCausalLM.Load(exports.Float16Folder, "cpu", threads: 1, ioBinding: false);
        using var bound = OnnxCausalLM.Load(exports.Float16Folder, "cpu", threads: 1, ioBinding: true);
        CompareSteps(plain, bound, [[5, 17, 42, 99, 7], [30, 31]], steps: 3);
        var (_, cache) = bound.Forward([5, 17], [0, 1], [1, 1], 1, null);
        Assert.Equal(Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16, cache[0].GetTensorTypeAndShape().ElementDataType);
        Dispose(cache);
        var greedy = new GenerationOptions { MaxNewTokens = 12, IgnoreEos = true };
        Assert.Equal(plain.Generate(["What is the", "How"], greedy), bound.Generate(["What is the", "How"], greedy));
    }
}
