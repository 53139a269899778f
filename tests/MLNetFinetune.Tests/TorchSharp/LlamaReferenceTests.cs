using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

/// <summary>
/// Llama-family folders written by the independent PyTorch reference (tests/reference/llama_reference.py: its own
/// random weights and safetensors writer, HF names, config fields and shard index), with its logits and greedy ids:
/// a sharded BF16 Llama with tied embeddings, llama3 rope scaling and grouped-query attention; a Qwen2 with q/k/v
/// biases in F32 over three shards; a multi-query Llama with attention and MLP biases. Needs Debian's python3-torch.
/// </summary>
public sealed class LlamaReferenceModels : IDisposable
{
    public const int Vocab = 320;

    public static readonly string[] Cases = ["llama-bf16-tied-llama3", "qwen2-f32-three-shards", "llama-mqa-biases"];

    static readonly JsonNode[] Configs =
    [
        new JsonObject
        {
            ["num_key_value_heads"] = 2, ["tie_word_embeddings"] = true, ["rope_theta"] = 500000.0,
            ["rope_scaling"] = new JsonObject
            {
                ["rope_type"] = "llama3", ["factor"] = 8.0, ["low_freq_factor"] = 1.0, ["high_freq_factor"] = 4.0, ["original_max_position_embeddings"] = 64,
            },
        },
        new JsonObject { ["model_type"] = "qwen2", ["num_key_value_heads"] = 2, ["eos_token_id"] = new JsonArray(2, 3) },
        new JsonObject { ["num_key_value_heads"] = 1, ["attention_bias"] = true, ["mlp_bias"] = true },
    ];

    static readonly (string DType, int Shards)[] Storage = [("bfloat16", 2), ("float32", 3), ("float32", 1)];

    public static readonly long[][] Ids = [[1, 5, 9, 200, 31, 7, 44, 120, 3, 250], [1, 300, 2, 8, 64, 0, 11, 13, 17, 19]];

    readonly TempDirectory _dir = new();
    readonly Lazy<string> _written;

    public LlamaReferenceModels() => _written = new Lazy<string>(Write);

    public string Folder(string name)
    {
        _ = _written.Value;
        return Path.Combine(_dir.Path, name);
    }

    string Write()
    {
        var cases = new JsonArray(Cases.Select((name, i) => (JsonNode)new JsonObject
        {
            ["dir"] = Path.Combine(_dir.Path, name), ["seed"] = i + 1, ["dtype"] = Storage[i].DType, ["shards"] = Storage[i].Shards, ["init_std"] = 0.2,
            ["ids"] = JsonSerializer.SerializeToNode(Ids), ["config"] = Configs[i].DeepClone(),
        }).ToArray());
        PyTorchReferenceModels.RunScript("llama_reference.py", ["write", _dir.File("cases.json", cases.ToJsonString())]);
        // Loading a folder needs a tokenizer; the reference knows none, so the test adds one that fits the vocabulary.
        var tokenizer = TestTokenizers.Small(Vocab);
        foreach (string name in Cases) tokenizer.Save(Path.Combine(_dir.Path, name));
        return _dir.Path;
    }

    public static float[] ReferenceLogits(string folder) => PyTorchReferenceModels.ReferenceLogits(folder);

    public static long[][] ReferenceGreedy(string folder) =>
        JsonSerializer.Deserialize<long[][]>(File.ReadAllText(Path.Combine(folder, "reference_greedy.json")))!;

    public void Dispose() => _dir.Dispose();
}

/// <summary>TorchSharp gives the reference's logits and greedy ids for each Llama-family layout, loaded as published.</summary>
[Collection(TorchCollection.Name)]
public class LlamaReferenceTests(LlamaReferenceModels models) : IClassFixture<LlamaReferenceModels>
{
    [Theory]
    [InlineData("llama-bf16-tied-llama3")]
    [InlineData("qwen2-f32-three-shards")]
    [InlineData("llama-mqa-biases")]
    public void TorchSharpGivesTheReferenceLogitsAndGreedyIds(string name)
    {
        string folder = models.Folder(name);
        long[][] rows = LlamaReferenceModels.Ids;
        int batch = rows.Length, seq = rows[0].Length;

        var (model, tokenizer) = HfCheckpoint.Load(folder, CPU);
        using (model)
        {
            model.eval();
            using (no_grad())
            {
                using var logits = model.forward(tensor(rows.SelectMany(r => r).ToArray(), [batch, seq]));
                float diff = Logits.MaxDiff(LlamaReferenceModels.ReferenceLogits(folder), logits.data<float>().ToArray());
                Assert.True(diff <= 1e-5f, $"{name}: max |TorchSharp − PyTorch| = {diff}");
            }

            // Cached greedy decoding (the key/value cache holds only the KV heads) gives the reference's uncached ids.
            var runtime = new TorchCausalLM(model, tokenizer);
            var greedy = DecodeLoop.GenerateIds(runtime, rows, new GenerationOptions { MaxNewTokens = 8, IgnoreEos = true });
            Assert.Equal(LlamaReferenceModels.ReferenceGreedy(folder), greedy);

            // Without IgnoreEos a row ends at the first of the config's eos ids (or the tokenizer's end of text), kept as generate keeps it.
            var ends = model.Config.EosTokenIds.Select(id => (long)id).Append(runtime.EosId).ToHashSet();
            Assert.Equal(ends.Order(), runtime.EndIds.Order());
            var stopping = DecodeLoop.GenerateIds(runtime, rows, new GenerationOptions { MaxNewTokens = 8 });
            var expected = LlamaReferenceModels.ReferenceGreedy(folder)
                .Select(row => row.TakeWhile(id => !ends.Contains(id)).Concat(row.SkipWhile(id => !ends.Contains(id)).Take(1)).ToArray());
            Assert.Equal(expected, stopping);
        }
    }

    [Theory]
    [InlineData("llama-bf16-tied-llama3")]
    [InlineData("qwen2-f32-three-shards")]
    [InlineData("llama-mqa-biases")]
    public void GenerateWithIdsPrintsTheReferenceGreedyIds(string name)
    {
        string folder = models.Folder(name);
        long[] prompt = LlamaReferenceModels.Ids[0];
        var (code, output, error) = Cli.CliRunner.Run("generate", folder, "--ids", string.Join(",", prompt), "--print-ids",
            "--max-new-tokens", "8", "--ignore-eos", "--device", "cpu", "--threads", "1");
        Assert.True(code == 0, error);
        string expected = string.Join(",", prompt.Concat(LlamaReferenceModels.ReferenceGreedy(folder)[0]));
        Assert.Equal(expected, output.Trim());

        // The same on its export, in ONNX Runtime.
        string onnx = folder + "-cli-onnx";
        Assert.Equal(0, Cli.CliRunner.Run("export", folder, "--out", onnx).Code);
        var exported = Cli.CliRunner.Run("generate", onnx, "--ids", string.Join(",", prompt), "--print-ids", "--max-new-tokens", "8", "--ignore-eos", "--provider", "cpu", "--threads", "1");
        Assert.True(exported.Code == 0, exported.Err);
        Assert.Equal(expected, exported.Out.Trim());

        var bad = Cli.CliRunner.Run("generate", folder, "--ids", "1,x,3", "--device", "cpu");
        Assert.Equal(1, bad.Code);
        Assert.Contains("--ids item 2 ('x') is not a token id", bad.Err);
        var outside = Cli.CliRunner.Run("generate", folder, "--ids", $"1,{LlamaReferenceModels.Vocab}", "--device", "cpu");
        Assert.Contains($"Prompt 0 has token id {LlamaReferenceModels.Vocab}, outside the model's vocabulary of {LlamaReferenceModels.Vocab}", outside.Err);
    }

    [Fact]
    public void ShardsDTypesAndTiedHeadsAreReadAsPublished()
    {
        var bf16 = ModelConfig.Load(Path.Combine(models.Folder("llama-bf16-tied-llama3"), ModelDirectory.ConfigFile));
        Assert.True(bf16.TieWordEmbeddings);
        Assert.Equal("llama3", bf16.RopeScaling!.Kind);
        Assert.Equal(2, bf16.KeyValueHeads);
        var qwen = ModelConfig.Load(Path.Combine(models.Folder("qwen2-f32-three-shards"), ModelDirectory.ConfigFile));
        Assert.Equal([2, 3], qwen.EosTokenIds);
        Assert.True(qwen.QkvBias && !qwen.OutputBias);

        using var shards = SafeTensorsCheckpoint.Open(models.Folder("qwen2-f32-three-shards"));
        Assert.EndsWith(SafeTensorsCheckpoint.IndexFile, shards.Source);
        Assert.Contains("model.layers.0.self_attn.q_proj.bias", shards.Tensors.Keys);
        Assert.DoesNotContain("model.layers.0.self_attn.o_proj.bias", shards.Tensors.Keys);
        using var tied = SafeTensorsCheckpoint.Open(models.Folder("llama-bf16-tied-llama3"));
        Assert.DoesNotContain("lm_head.weight", tied.Tensors.Keys);
        Assert.Equal("BF16", tied.Tensors["model.embed_tokens.weight"].DType);
    }
}

/// <summary>Saving shards as save_pretrained does, and reading them back.</summary>
[Collection(TorchCollection.Name)]
public class ShardedSaveTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void AModelAboveTheShardSizeSavesShardsWithAnIndexAndLoadsBackTheSame()
    {
        manual_seed(5);
        var tokenizer = TestTokenizers.Small(LlamaReferenceModels.Vocab);
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny-llama", LlamaReferenceModels.Vocab));
        string dir = Path.Combine(_dir.Path, "model");
        HfCheckpoint.Save(model, tokenizer, dir);
        Assert.True(File.Exists(Path.Combine(dir, ModelDirectory.WeightsFile)));

        // Shards of at most 100 kB (the 80 kB embedding alone fills one): the single file gives way to shards and an index.
        HfCheckpoint.Save(model, tokenizer, dir, maxShardBytes: 100_000);
        Assert.False(File.Exists(Path.Combine(dir, ModelDirectory.WeightsFile)));
        var shards = Directory.GetFiles(dir, "model-*-of-*.safetensors").Select(f => Path.GetFileName(f)).Order(StringComparer.Ordinal).ToArray();
        Assert.True(shards.Length >= 3, string.Join(", ", shards));
        Assert.Equal($"model-00001-of-{shards.Length:D5}.safetensors", shards[0]);
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, SafeTensorsCheckpoint.IndexFile)))!;
        Assert.Equal(model.state_dict().Sum(p => 4 * p.Value.numel()), index["metadata"]!["total_size"]!.GetValue<long>());
        Assert.Equal(model.state_dict().Keys.Order(StringComparer.Ordinal), index["weight_map"]!.AsObject().Select(p => p.Key));

        var (reloaded, _) = HfCheckpoint.Load(dir, CPU);
        using (reloaded)
            foreach (var (name, value) in model.state_dict())
                Assert.True(value.data<float>().SequenceEqual(reloaded.state_dict()[name].data<float>()), name);

        // A shard the index names but the folder lacks is named.
        File.Delete(Path.Combine(dir, shards[^1]));
        var e = Assert.Throws<MLNetFinetune.Data.DataFileException>(() => HfCheckpoint.Load(dir, CPU));
        Assert.Contains($"weight_map lists shard '{shards[^1]}', which does not exist", e.Message);

        // Saved small again, the shards and index go.
        HfCheckpoint.Save(model, tokenizer, dir);
        Assert.Empty(Directory.GetFiles(dir, "model-*"));
        Assert.False(File.Exists(Path.Combine(dir, SafeTensorsCheckpoint.IndexFile)));
    }

    [Fact]
    public void APickleCheckpointIsRefusedNamingTheConversion()
    {
        string dir = Path.Combine(_dir.Path, "pickle");
        Directory.CreateDirectory(dir);
        ModelConfig.Preset("tiny-llama", LlamaReferenceModels.Vocab).Save(Path.Combine(dir, ModelDirectory.ConfigFile));
        TestTokenizers.Small(LlamaReferenceModels.Vocab).Save(dir);
        File.WriteAllBytes(Path.Combine(dir, "pytorch_model.bin"), [0x80, 0x02]);
        var e = Assert.Throws<FileNotFoundException>(() => HfCheckpoint.Load(dir, CPU));
        Assert.Contains("pytorch_model.bin (pickle), which is never read", e.Message);
        Assert.Contains("save_pretrained(dir, safe_serialization=True)", e.Message);
    }
}
