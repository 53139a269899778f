using Microsoft.Data.Analysis;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.OnnxRuntime;

[Collection(TorchCollection.Name)]
public class OnnxExportTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    // A tiny model with sharp, varied logits (random weights at a larger scale) saved as a model directory.
    (string Dir, TransformerForCausalLM Model, TextTokenizer Tokenizer) Saved(bool parallel = true, double rotaryPct = 0.25)
    {
        var tokenizer = TestTokenizers.Small();
        manual_seed(5);
        var model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320) with { UseParallelResidual = parallel, RotaryPct = rotaryPct });
        using (no_grad()) foreach (var p in model.parameters()) if (p.dim() >= 2) p.mul_(5);
        model.eval();
        string dir = Path.Combine(_dir.Path, $"model-{parallel}-{rotaryPct}");
        HfCheckpoint.Save(model, tokenizer, dir);
        return (dir, model, tokenizer);
    }

    static float[] TorchLogits(TransformerForCausalLM model, long[] ids)
    {
        using var _ = no_grad();
        return model.forward(tensor(ids, [1, ids.Length])).data<float>().ToArray();
    }

    static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        float worst = 0;
        for (int i = 0; i < expected.Length; i++) worst = Math.Max(worst, Math.Abs(expected[i] - actual[i]));
        Assert.True(worst <= 1e-4f, $"{what}: max |ORT − TorchSharp| = {worst}");
    }

    [Theory]
    [InlineData(true, 0.25)]
    [InlineData(false, 1.0)]
    public void OrtMatchesTorchSharpForPrefillAndThreeCachedDecodeSteps(bool parallel, double rotaryPct)
    {
        var (dir, model, _) = Saved(parallel, rotaryPct);
        using var __ = model;
        string onnx = OnnxExporter.Export(dir);
        Assert.True(File.Exists(Path.Combine(onnx, "model.onnx")));
        Assert.True(File.Exists(Path.Combine(onnx, "genai_config.json")));
        using var ort = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        Assert.Equal("CPU", ort.Provider);

        long[] sequence = [5, 17, 42, 99, 7, 3, 250, 11, 64];
        long[] prompt = sequence[..6];
        var (logits, cache) = ort.Forward(prompt, [0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1], 1, null);
        Close(TorchLogits(model, prompt), logits, "prefill");
        for (int t = 6; t < sequence.Length; t++)
        {
            var (stepLogits, next) = ort.Forward([sequence[t]], [t], Enumerable.Repeat(1L, t + 1).ToArray(), 1, cache);
            foreach (var v in cache) v.Dispose();
            cache = next;
            var full = TorchLogits(model, sequence[..(t + 1)]);
            Close(full.AsSpan(t * 320, 320), stepLogits, $"decode step {t - 5}");
        }
        foreach (var v in cache) v.Dispose();
    }

    [Fact]
    public void ALeftPaddedBatchGivesEachRowItsOwnLogits()
    {
        var (dir, model, _) = Saved();
        using var __ = model;
        using var ort = OnnxCausalLM.Load(OnnxExporter.Export(dir), "cpu", threads: 1);
        long[] a = [5, 17, 42, 99, 7], b = [30, 31];
        long[] ids = [.. a, 1, 1, 1, .. b];
        long[] mask = [1, 1, 1, 1, 1, 0, 0, 0, 1, 1];
        long[] positions = [0, 1, 2, 3, 4, 0, 0, 0, 0, 1];
        var (logits, cache) = ort.Forward(ids, positions, mask, 2, null);
        foreach (var v in cache) v.Dispose();
        Close(TorchLogits(model, a), logits.AsSpan(0, 5 * 320), "row 0");
        Close(TorchLogits(model, b), logits.AsSpan((5 + 3) * 320, 2 * 320), "row 1 (left padded)");
    }

    [Fact]
    public void GenerationMatchesTorchSharpAndHonoursItsOptions()
    {
        var (dir, model, tokenizer) = Saved();
        using var transformer = new CausalLMTransformer(model, tokenizer);
        using var ort = OnnxCausalLM.Load(OnnxExporter.Export(dir), "cpu", threads: 1);
        var greedy = new GenerationOptions { MaxNewTokens = 12 };
        string expected = transformer.Generate("What is the", greedy);
        Assert.Equal(expected, ort.Generate("What is the", greedy));

        // A batch with padding gives each prompt what it gets alone.
        var batch = ort.Generate(["What is the", "How"], greedy);
        Assert.Equal([expected, ort.Generate("How", greedy)], batch);

        // Streaming pieces concatenate to the same text.
        var pieces = ort.GenerateStreaming("What is the", greedy).ToBlockingEnumerable().ToList();
        Assert.True(pieces.Count > 1);
        Assert.Equal(expected, string.Concat(pieces));

        // Seeded sampling repeats; a different seed differs; top-k 1 is greedy.
        var sampled = new GenerationOptions { MaxNewTokens = 12, Temperature = 1.5, TopP = 0.95, Seed = 3 };
        string sampledText = ort.Generate("What is the", sampled);
        Assert.NotEqual(expected, sampledText); // it did sample
        Assert.Equal(sampledText, ort.Generate("What is the", sampled));
        Assert.Equal(transformer.Generate("What is the", sampled), sampledText);
        Assert.Equal(expected, ort.Generate("What is the", new GenerationOptions { MaxNewTokens = 12, Temperature = 2, TopK = 1 }));
        var seeds = Enumerable.Range(0, 6).Select(s => ort.Generate("What is the", new GenerationOptions { MaxNewTokens = 12, Temperature = 2, Seed = s })).ToHashSet();
        Assert.True(seeds.Count > 1);

        // A repetition penalty changes greedy text that repeats; stop strings cut before the stop.
        var penalised = ort.Generate("What is the", new GenerationOptions { MaxNewTokens = 12, RepetitionPenalty = 5 });
        Assert.Equal(transformer.Generate("What is the", new GenerationOptions { MaxNewTokens = 12, RepetitionPenalty = 5 }), penalised);
        string stop = expected.Length > 4 ? expected.Substring(3, 2) : expected;
        var stopped = ort.Generate("What is the", new GenerationOptions { MaxNewTokens = 12, StopSequences = [stop] });
        Assert.Equal(expected[..expected.IndexOf(stop, StringComparison.Ordinal)], stopped);
        var streamedStop = string.Concat(ort.GenerateStreaming("What is the", new GenerationOptions { MaxNewTokens = 12, StopSequences = [stop] }).ToBlockingEnumerable());
        Assert.Equal(stopped, streamedStop);
    }

    [Fact]
    public void ProvidersAndBadFoldersAreExplained()
    {
        var (dir, model, _) = Saved();
        model.Dispose();
        string onnx = OnnxExporter.Export(dir);
        using (var auto = OnnxCausalLM.Load(onnx, "auto", threads: 1))
            Assert.True(auto.Provider == "CUDA" || auto.Provider.StartsWith("CPU (CUDA unavailable:"), auto.Provider);
        if (!File.Exists("/usr/lib/x86_64-linux-gnu/libcudart.so.13"))
        {
            var e = Assert.Throws<InvalidOperationException>(() => OnnxCausalLM.Load(onnx, "cuda"));
            Assert.Contains("The CUDA execution provider is unavailable", e.Message);
        }
        Assert.Contains("Unknown execution provider 'tpu'", Assert.Throws<ArgumentException>(() => OnnxCausalLM.Load(onnx, "tpu")).Message);
        using (var cpu = OnnxCausalLM.Load(onnx, "cpu", threads: 1))
        {
            Assert.Contains("Stop sequences must not be empty", Assert.Throws<ArgumentException>(() => cpu.Generate("x", new GenerationOptions { StopSequences = [""] })).Message);
            Assert.Contains("TopP must be in (0, 1]", Assert.Throws<ArgumentOutOfRangeException>(() => cpu.Generate("x", new GenerationOptions { TopP = 0 })).Message);
            Assert.Contains("Inconsistent shapes: 3 ids, 2 positions, 3 mask values", Assert.Throws<ArgumentException>(() => cpu.Forward([1, 2, 3], [0, 1], [1, 1, 1], 1, null)).Message);
            using var cancelled = new CancellationTokenSource();
            cancelled.Cancel();
            Assert.Throws<OperationCanceledException>(() => cpu.Generate(["What is"], new GenerationOptions(), cancelled.Token));
        }

        var missing = Assert.Throws<FileNotFoundException>(() => OnnxCausalLM.Load(dir, "cpu", threads: 1));
        Assert.Contains("has no model.onnx", missing.Message);
        File.Delete(Path.Combine(onnx, "tokenizer.json"));
        File.Delete(Path.Combine(onnx, "vocab.json"));
        Assert.Contains("has no tokenizer", Assert.Throws<FileNotFoundException>(() => OnnxCausalLM.Load(onnx, "cpu", threads: 1)).Message);

        string onnx2 = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "onnx2") });
        using var ort = OnnxCausalLM.Load(onnx2, "cpu", threads: 1);
        var tooLong = Assert.Throws<ArgumentException>(() => ort.Generate(string.Join(" ", Enumerable.Repeat("What is the capital", 100)), new GenerationOptions { MaxNewTokens = 10 }));
        Assert.Contains("exceeds the model's context of 256", tooLong.Message);
    }

    [Fact]
    public async Task TheMLNetTransformAndTheChatClientGenerateWhatTheGeneratorDoes()
    {
        var (dir, model, _) = Saved();
        model.Dispose();
        string onnx = OnnxExporter.Export(dir);
        var ml = new MLContext(seed: 0);
        var greedy = new GenerationOptions { MaxNewTokens = 8 };
        var data = new DataFrame(new StringDataFrameColumn("question", ["What is the capital?", "Which file?"]));
        var pipeline = ml.Transforms.Text.ApplyPromptTemplate("Prompt", PromptTemplates.QuestionAnswer.Prompt)
            .Append(ml.Transforms.Text.GenerateWithOnnx(new OnnxGenerationOptions { ModelFolder = onnx, Provider = "cpu", Threads = 1, Generation = greedy }));
        var fitted = pipeline.Fit(data);
        var generated = fitted.Transform(data).GetColumn<ReadOnlyMemory<char>>("Generated").Select(g => g.ToString()).ToArray();
        using var ort = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        string expected = ort.Generate(PromptTemplates.QuestionAnswer.Prompt.Format(("question", "What is the capital?")), greedy);
        Assert.Equal(expected, generated[0]);
        fitted.LastTransformer.Dispose();

        IChatClient chat = new OnnxChatClient(ort);
        var response = await chat.GetResponseAsync([new ChatMessage(ChatRole.System, "Be brief."), new ChatMessage(ChatRole.User, "What is the capital?")],
            new ChatOptions { MaxOutputTokens = 8 });
        Assert.Equal(expected, response.Text);
        var pieces = new List<string>();
        await foreach (var update in chat.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "What is the capital?")], new ChatOptions { MaxOutputTokens = 8 }))
            pieces.Add(update.Text);
        string streamed = string.Concat(pieces);
        Assert.Equal(expected, streamed);
        Assert.Same(ort, chat.GetService(typeof(OnnxCausalLM)));
        Assert.Contains("no user message to answer", (await Assert.ThrowsAsync<ArgumentException>(() => chat.GetResponseAsync([new ChatMessage(ChatRole.System, "no user")]))).Message);
        var overLong = await Assert.ThrowsAsync<ArgumentException>(() => chat.GetResponseAsync([new ChatMessage(ChatRole.User, string.Join(' ', Enumerable.Repeat("What is the capital?", 80)))]));
        Assert.Contains("exceeds the model's context of 256", overLong.Message);
    }

    [Fact]
    public void AFloat16ExportStaysCloseToFloat32AndDecodesWithItsCache()
    {
        var (dir, model, tokenizer) = Saved();
        using var transformer = new CausalLMTransformer(model, tokenizer);
        string onnx = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "fp16"), Float16 = true });
        Assert.True(new FileInfo(Path.Combine(onnx, "model.onnx")).Length < 0.6 * new FileInfo(Path.Combine(dir, "model.safetensors")).Length);
        using var ort = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        long[] ids = [5, 17, 42, 99, 7];
        var (logits, cache) = ort.Forward(ids, [0, 1, 2, 3, 4], [1, 1, 1, 1, 1], 1, null);
        var (step, next) = ort.Forward([3], [5], [1, 1, 1, 1, 1, 1], 1, cache);
        foreach (var v in cache.Concat(next)) v.Dispose();
        var expected = TorchLogits(model, [.. ids, 3]);
        float scale = expected.Max(Math.Abs);
        for (int i = 0; i < logits.Length; i++) Assert.InRange(Math.Abs(logits[i] - expected[i]), 0, 0.02f * scale);
        for (int i = 0; i < step.Length; i++) Assert.InRange(Math.Abs(step[i] - expected[5 * 320 + i]), 0, 0.02f * scale);
    }

    [Fact]
    public void LargeModelsKeepTheirWeightsInExternalData()
    {
        var (dir, model, _) = Saved();
        using var __ = model;
        string onnx = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "external"), ExternalDataThreshold = 1000 });
        Assert.True(new FileInfo(Path.Combine(onnx, "model.onnx.data")).Length > new FileInfo(Path.Combine(onnx, "model.onnx")).Length);
        using var ort = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        var (logits, cache) = ort.Forward([5, 17], [0, 1], [1, 1], 1, null);
        foreach (var v in cache) v.Dispose();
        Close(TorchLogits(model, [5, 17]), logits, "external-data model");
    }
}
