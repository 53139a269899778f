using System.Text.Json.Nodes;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Tests.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using Onnx;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.OnnxRuntime;

/// <summary>
/// The ONNX export of the Llama family against the independent PyTorch reference's folders (sharded BF16 with a tied
/// head, llama3 rotary scaling and grouped-query attention; Qwen2 with q/k/v biases over three F32 shards; multi-query
/// with attention and MLP biases): prefill logits, cached steps against TorchSharp's cached logits, greedy ids, a
/// float16 export, the tied head stored once and genai_config.json.
/// </summary>
[Collection(TorchCollection.Name)]
public class LlamaOnnxExportTests(LlamaReferenceModels models, ITestOutputHelper output) : IClassFixture<LlamaReferenceModels>, IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    string Export(string name, bool float16 = false) =>
        OnnxExporter.Export(models.Folder(name), new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, name + (float16 ? "-fp16" : "")), Float16 = float16 });

    [Theory]
    [InlineData("llama-bf16-tied-llama3")]
    [InlineData("qwen2-f32-three-shards")]
    [InlineData("llama-mqa-biases")]
    public void TheExportGivesTheReferenceLogitsTorchSharpsCachedStepsAndTheReferenceGreedyIds(string name)
    {
        string folder = models.Folder(name);
        long[][] rows = LlamaReferenceModels.Ids;
        long[][] greedy = LlamaReferenceModels.ReferenceGreedy(folder);
        int batch = rows.Length, seq = rows[0].Length;
        long[] ids = rows.SelectMany(r => r).ToArray();
        using var ort = OnnxCausalLM.Load(Export(name), "cpu", threads: 1);

        // Prefill of both rows against the reference's logits.
        long[] positions = rows.SelectMany(r => Enumerable.Range(0, r.Length).Select(p => (long)p)).ToArray();
        var (logits, cache) = ort.Forward(ids, positions, Enumerable.Repeat(1L, ids.Length).ToArray(), batch, null);
        float prefill = Logits.MaxDiff(LlamaReferenceModels.ReferenceLogits(folder), logits);
        output.WriteLine($"{name}: prefill max |ONNX − PyTorch reference| = {prefill:G3}");
        Assert.True(prefill <= 1e-4f, $"{name}: prefill max |ONNX − PyTorch| = {prefill}");

        // Three cached steps feeding the reference's greedy tokens, against TorchSharp's cached logits for the same steps.
        var (model, _) = HfCheckpoint.Load(folder, CPU);
        using (model)
        using (no_grad())
        using (var torchCache = model.NewCache(batch, seq + 3))
        {
            model.eval();
            model.Forward(tensor(ids, [batch, seq]), cache: torchCache).Dispose();
            for (int step = 0; step < 3; step++)
            {
                long[] next = greedy.Select(r => r[step]).ToArray();
                var (stepLogits, newCache) = ort.Forward(next, next.Select(_ => (long)(seq + step)).ToArray(), Enumerable.Repeat(1L, batch * (seq + step + 1)).ToArray(), batch, cache);
                foreach (var v in cache) v.Dispose();
                cache = newCache;
                using var expected = model.Forward(tensor(next, [batch, 1]), cache: torchCache);
                float diff = Logits.MaxDiff(expected.data<float>().ToArray(), stepLogits);
                output.WriteLine($"{name}: cached step {step + 1} max |ONNX − TorchSharp| = {diff:G3}");
                Assert.True(diff <= 1e-4f, $"{name}: cached step {step + 1}: max |ONNX − TorchSharp| = {diff}");
            }
        }
        foreach (var v in cache) v.Dispose();

        // The shared decode loop over the export gives the reference's greedy ids (computed without a cache).
        Assert.Equal(greedy, DecodeLoop.GenerateIds(ort, rows, new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true }));
    }

    [Fact]
    public void AFloat16ExportKeepsTheGreedyIdsAndStaysCloseToTheReference()
    {
        const string name = "llama-bf16-tied-llama3";
        string folder = models.Folder(name);
        string onnx = Export(name, float16: true);
        using var ort = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        Assert.Equal(TensorElementType.Float16, PastKeyType(onnx));

        long[][] rows = LlamaReferenceModels.Ids;
        long[] ids = rows.SelectMany(r => r).ToArray();
        long[] positions = rows.SelectMany(r => Enumerable.Range(0, r.Length).Select(p => (long)p)).ToArray();
        var (logits, cache) = ort.Forward(ids, positions, Enumerable.Repeat(1L, ids.Length).ToArray(), rows.Length, null);
        foreach (var v in cache) v.Dispose();
        float[] expected = LlamaReferenceModels.ReferenceLogits(folder);
        float diff = Logits.MaxDiff(expected, logits), scale = expected.Max(Math.Abs);
        output.WriteLine($"{name} float16: prefill max |ONNX − PyTorch reference| = {diff:G3} (largest |logit| {scale:G3})");
        Assert.True(diff <= 0.02f * scale, $"float16: max |ONNX − PyTorch| = {diff}, over 2% of the largest logit {scale}");
        // Decoding steps run on the float16 cache.
        Assert.Equal(LlamaReferenceModels.ReferenceGreedy(folder), DecodeLoop.GenerateIds(ort, rows, new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true }));
    }

    static TensorElementType PastKeyType(string onnx)
    {
        using var session = new InferenceSession(Path.Combine(onnx, OnnxExporter.ModelFile));
        return session.InputMetadata[OnnxContract.PastKey(0)].ElementDataType;
    }

    [Fact]
    public void ATiedHeadStoresTheEmbeddingOnce()
    {
        const string name = "llama-bf16-tied-llama3";
        var config = ModelConfig.Load(Path.Combine(models.Folder(name), ModelDirectory.ConfigFile));
        Assert.True(config.TieWordEmbeddings);
        string modelPath = Path.Combine(Export(name), OnnxExporter.ModelFile);

        var graph = ModelProto.Parser.ParseFrom(File.ReadAllBytes(modelPath)).Graph;
        long embeddingElements = (long)config.VocabSize * config.HiddenSize;
        var vocabularyTables = graph.Initializer.Where(t => t.Dims.Aggregate(1L, (a, b) => a * b) == embeddingElements).Select(t => t.Name).ToList();
        Assert.Equal(["model.embed_tokens.weight"], vocabularyTables);
        // The whole file is the float32 parameters, counted once, and a graph far smaller than a second table.
        long parameterBytes = 4 * config.ParameterCount(), fileBytes = new FileInfo(modelPath).Length;
        output.WriteLine($"tied export: {fileBytes} bytes for {parameterBytes} bytes of parameters (the table is {4 * embeddingElements})");
        Assert.InRange(fileBytes, parameterBytes, parameterBytes + 4 * embeddingElements / 2);
    }

    [Fact]
    public void GenAIConfigDescribesALlamaAndAQwen2Export()
    {
        var llama = JsonNode.Parse(File.ReadAllText(Path.Combine(Export("llama-bf16-tied-llama3"), "genai_config.json")))!["model"]!;
        Assert.Equal("llama", (string)llama["type"]!);
        Assert.Equal(2, (int)llama["decoder"]!["num_key_value_heads"]!);
        Assert.Equal(4, (int)llama["decoder"]!["num_attention_heads"]!);
        Assert.Equal(16, (int)llama["decoder"]!["head_size"]!);
        Assert.Equal(2, (int)llama["decoder"]!["num_hidden_layers"]!);
        Assert.Equal(2, (int)llama["eos_token_id"]!);
        Assert.Equal(1, (int)llama["bos_token_id"]!);
        Assert.Equal(128, (int)llama["context_length"]!);
        Assert.Equal(LlamaReferenceModels.Vocab, (int)llama["vocab_size"]!);

        var qwen = JsonNode.Parse(File.ReadAllText(Path.Combine(Export("qwen2-f32-three-shards"), "genai_config.json")))!["model"]!;
        Assert.Equal("qwen2", (string)qwen["type"]!);
        Assert.Equal(2, (int)qwen["decoder"]!["num_key_value_heads"]!);
        Assert.Equal([2, 3], qwen["eos_token_id"]!.AsArray().Select(id => (int)id!));
        var tokenizer = TestTokenizers.Small(LlamaReferenceModels.Vocab);
        Assert.Equal(tokenizer.PadId ?? 2, (int)qwen["pad_token_id"]!);

        var mqa = JsonNode.Parse(File.ReadAllText(Path.Combine(Export("llama-mqa-biases"), "genai_config.json")))!["model"]!;
        Assert.Equal(1, (int)mqa["decoder"]!["num_key_value_heads"]!);
    }
}
