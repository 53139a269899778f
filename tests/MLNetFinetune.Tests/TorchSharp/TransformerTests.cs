using System.Text.Json.Nodes;
using Microsoft.Data.Analysis;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

[Collection(TorchCollection.Name)]
public class TransformerTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public TransformerTests()
    {
        manual_seed(1);
    }

    public void Dispose() => _dir.Dispose();

    static ModelConfig Tiny(int vocab = 300) => ModelConfig.Preset("tiny", vocab);

    static TextTokenizer SmallTokenizer() => TestTokenizers.Small(300);

    static Tensor Ids(params long[][] rows) => tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length], dtype: int64);

    [Fact]
    public void LogitsHaveTheExpectedShapeAndParameterCountMatchesTheConfig()
    {
        using var model = new TransformerForCausalLM(Tiny());
        using var logits = model.forward(Ids([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]));
        Assert.Equal(new long[] { 2, 5, 300 }, logits.shape);
        Assert.Equal(model.Config.ParameterCount(), model.parameters().Sum(p => p.numel()));
        Assert.Equal(70_426_624, ModelConfig.Preset("pythia-70m").ParameterCount()); // pythia-70m's published count
    }

    [Theory] // the parameter counts the models' pages publish: the preset shapes are theirs
    [InlineData("smollm2-135m", 134_515_008)]
    [InlineData("smollm2-360m", 361_821_120)]
    [InlineData("qwen2.5-0.5b", 494_032_768)]
    [InlineData("tinyllama-1.1b", 1_100_048_384)]
    [InlineData("llama-3.2-1b", 1_235_814_400)]
    public void LlamaFamilyPresetsHaveTheirModelsParameterCounts(string preset, long parameters) =>
        Assert.Equal(parameters, ModelConfig.Preset(preset).ParameterCount());

    [Fact]
    public void ATiedGroupedQueryModelHasTheConfigsParametersUnderHfNames()
    {
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny-llama", 320) with { AttentionBias = true, MlpBias = true });
        Assert.Equal(model.Config.ParameterCount(), model.parameters().Sum(p => p.numel()));
        var names = model.state_dict().Keys.ToHashSet();
        Assert.Contains("model.embed_tokens.weight", names);
        Assert.Contains("model.layers.1.self_attn.k_proj.bias", names);
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", names);
        Assert.Contains("model.norm.weight", names);
        Assert.DoesNotContain("lm_head.weight", names); // tied
        Assert.Equal(new long[] { 2 * 16, 64 }, model.state_dict()["model.layers.0.self_attn.k_proj.weight"].shape); // 2 KV heads of 16
        using var logits = model.forward(Ids([1, 2, 3]));
        Assert.Equal(new long[] { 1, 3, 320 }, logits.shape);
    }

    [Fact]
    public void ChangingTokenTNeverChangesLogitsBeforeT()
    {
        using var model = new TransformerForCausalLM(Tiny());
        model.eval();
        using var _ = no_grad();
        long[] tokens = [5, 17, 42, 99, 7, 3, 250, 11];
        using var before = model.forward(Ids(tokens));
        for (int t = 0; t < tokens.Length; t++)
        {
            long[] changed = (long[])tokens.Clone();
            changed[t] = (changed[t] + 1) % 300;
            using var after = model.forward(Ids(changed));
            if (t > 0) Assert.True(allclose(before[.., ..t], after[.., ..t], rtol: 0, atol: 1e-6), $"logits before {t} changed");
            Assert.False(allclose(before[.., t..], after[.., t..], rtol: 0, atol: 1e-6), $"logits from {t} on should change");
        }
    }

    [Fact]
    public void RotaryMatchesItsClosedForm()
    {
        const int seq = 6, dim = 8, headDim = 12;
        const double theta = 10000;
        var x = randn(1, 2, seq, headDim, dtype: float32);
        var (cos, sin) = new Rotary(dim, theta).Table(seq, CPU);
        var rotated = Rotary.Apply(x, cos, sin, dim).data<float>().ToArray();
        var input = x.data<float>().ToArray();
        for (int h = 0; h < 2; h++)
            for (int p = 0; p < seq; p++)
                for (int i = 0; i < headDim; i++)
                {
                    int at = (h * seq + p) * headDim;
                    double expected = input[at + i]; // dimensions past the rotary part pass through
                    if (i < dim)
                    {
                        int pair = i < dim / 2 ? i : i - dim / 2;
                        double angle = p * Math.Pow(theta, -2.0 * pair / dim);
                        double a = input[at + pair], b = input[at + pair + dim / 2];
                        expected = i < dim / 2 ? a * Math.Cos(angle) - b * Math.Sin(angle) : b * Math.Cos(angle) + a * Math.Sin(angle);
                    }
                    Assert.InRange(rotated[at + i] - expected, -1e-5, 1e-5);
                }
    }

    [Fact]
    public void SafetensorsRoundTripIsBitExact()
    {
        using var model = new TransformerForCausalLM(Tiny());
        var tokenizer = SmallTokenizer();
        string dir = Path.Combine(_dir.Path, "model");
        HfCheckpoint.Save(model, tokenizer, dir);

        var (loaded, loadedTokenizer) = HfCheckpoint.Load(dir);
        using (loaded)
        {
            var original = model.state_dict();
            foreach (var (name, value) in loaded.state_dict())
                Assert.Equal(original[name].data<float>().ToArray().Select(BitConverter.SingleToInt32Bits), value.data<float>().ToArray().Select(BitConverter.SingleToInt32Bits));
        }
        Assert.Equal(tokenizer.Encode("Where are the examples?"), loadedTokenizer.Encode("Where are the examples?"));
        Assert.True(File.Exists(Path.Combine(dir, "generation_config.json")));
    }

    [Fact]
    public void AHuggingFaceLayoutDirectoryLoadsAsIsAndGivesTheSameLogits()
    {
        using var model = new TransformerForCausalLM(Tiny());
        model.eval();
        string dir = Path.Combine(_dir.Path, "pythia-like");
        HfCheckpoint.Save(model, SmallTokenizer(), dir);

        // config.json as transformers writes it, with fields that do not change the model.
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        config["attention_dropout"] = 0.0;
        config["hidden_dropout"] = 0.0;
        config["classifier_dropout"] = 0.1;
        config["use_cache"] = true;
        config["rope_scaling"] = null;
        config["transformers_version"] = "4.44.0";
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString());
        // Buffers older HF checkpoints carry beside the weights.
        string weights = Path.Combine(dir, "model.safetensors");
        var tensors = new List<(string, long[], float[])>();
        using (var file = SafeTensorsFile.Open(weights))
            tensors.AddRange(file.Tensors.Values.Select(t => (t.Name, t.Shape, file.ReadFloat32(t.Name))));
        tensors.Add(("gpt_neox.layers.0.attention.rotary_emb.inv_freq", [2], [1f, 0.01f]));
        tensors.Add(("gpt_neox.layers.0.attention.masked_bias", [], [-1e9f]));
        tensors.Add(("gpt_neox.layers.0.attention.bias", [1, 1, 4, 4], Enumerable.Repeat(1f, 16).ToArray()));
        SafeTensorsFile.WriteFloat32(weights, tensors);

        var (loaded, _) = HfCheckpoint.Load(dir);
        using (loaded)
        {
            loaded.eval();
            using var __ = no_grad();
            using var ids = Ids([3, 1, 4, 1, 5, 9, 2, 6]);
            Assert.True(allclose(model.forward(ids), loaded.forward(ids), rtol: 0, atol: 0));
        }
    }

    [Fact]
    public void MismatchedConfigWeightsOrMissingTokenizerAreNamed()
    {
        using var model = new TransformerForCausalLM(Tiny());
        string dir = Path.Combine(_dir.Path, "bad");
        HfCheckpoint.Save(model, SmallTokenizer(), dir);
        string configPath = Path.Combine(dir, "config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!.AsObject();
        config["intermediate_size"] = 128;
        File.WriteAllText(configPath, config.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => HfCheckpoint.Load(dir));
        Assert.Contains("tensor 'gpt_neox.layers.0.mlp.dense_h_to_4h.weight' is [256, 64] but the config gives [128, 64]: config.json and the weights disagree", e.Message);

        config["intermediate_size"] = 256;
        config["vocab_size"] = 100;
        File.WriteAllText(configPath, config.ToJsonString());
        var vocab = Assert.Throws<InvalidDataException>(() => HfCheckpoint.Load(dir));
        Assert.Contains("gives vocab_size 100", vocab.Message);

        config["vocab_size"] = 300;
        File.WriteAllText(configPath, config.ToJsonString());
        foreach (var f in new[] { "tokenizer.json", "vocab.json", "merges.txt" }) File.Delete(Path.Combine(dir, f));
        var tokenizer = Assert.Throws<FileNotFoundException>(() => HfCheckpoint.Load(dir));
        Assert.Contains("has no tokenizer", tokenizer.Message);
    }

    [Fact]
    public void HalfPrecisionCheckpointsAreReadExactly()
    {
        // Pythia's published safetensors are float16; bfloat16 is common too. Both widen to float32 without loss.
        string path = Path.Combine(_dir.Path, "half.safetensors");
        Half[] f16 = [(Half)1.5f, (Half)(-0.25f), Half.MaxValue];
        float[] bf16Values = [3.0f, -1.0f / 128];
        byte[] f16Bytes = System.Runtime.InteropServices.MemoryMarshal.AsBytes(f16.AsSpan()).ToArray();
        byte[] bf16Bytes = bf16Values.SelectMany(v => BitConverter.GetBytes((ushort)(BitConverter.SingleToInt32Bits(v) >> 16))).ToArray();
        string header = "{\"a\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[6,10]}}";
        using (var file = File.Create(path))
        {
            file.Write(BitConverter.GetBytes((ulong)header.Length));
            file.Write(System.Text.Encoding.ASCII.GetBytes(header));
            file.Write(f16Bytes);
            file.Write(bf16Bytes);
        }
        using var weights = SafeTensorsFile.Open(path);
        Assert.Equal([1.5f, -0.25f, 65504f], weights.ReadFloat32("a"));
        Assert.Equal(bf16Values, weights.ReadFloat32("b"));
        Assert.Contains("no tensor 'c'", Assert.Throws<KeyNotFoundException>(() => weights.ReadFloat32("c")).Message);
    }

    [Fact]
    public void BadConfigsAndWeightFilesAreNamed()
    {
        string configPath = Path.Combine(_dir.Path, "config.json");
        File.WriteAllText(configPath, "{\"model_type\": \"gpt_neox\", \"vocab_size\": 10, \"hidden_size\": 10, \"num_hidden_layers\": 1, \"num_attention_heads\": 3, \"intermediate_size\": 4}");
        Assert.Equal($"{configPath}: hidden_size 10 is not divisible by num_attention_heads 3", Assert.Throws<InvalidDataException>(() => ModelConfig.Load(configPath)).Message);
        File.WriteAllText(configPath, "{\"model_type\": \"mamba\"}");
        Assert.Contains("model_type is \"mamba\"; supported: gpt_neox", Assert.Throws<InvalidDataException>(() => ModelConfig.Load(configPath)).Message);

        // Llama-family values this model cannot honour are refused naming the key and the value.
        const string llama = "\"model_type\": \"llama\", \"vocab_size\": 32, \"hidden_size\": 16, \"num_hidden_layers\": 1, \"num_attention_heads\": 4, \"intermediate_size\": 8, \"hidden_act\": \"silu\"";
        foreach (var (extra, message) in new[]
        {
            (", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}", "rope_scaling type \"yarn\" is not supported"),
            (", \"num_key_value_heads\": 3", "num_key_value_heads 3 must divide num_attention_heads 4"),
            (", \"hidden_act\": \"gelu\"", "hidden_act \"gelu\" is not supported for llama"),
            (", \"use_sliding_window\": true", "use_sliding_window is true"),
        })
        {
            File.WriteAllText(configPath, "{" + llama + extra + "}");
            Assert.StartsWith($"{configPath}: {message}", Assert.Throws<InvalidDataException>(() => ModelConfig.Load(configPath)).Message);
        }

        string weights = Path.Combine(_dir.Path, "model.safetensors");
        SafeTensorsFile.WriteFloat32(weights, [("w", [2, 2], [1f, 2f, 3f, 4f])]);
        var bytes = File.ReadAllBytes(weights);
        File.WriteAllBytes(weights, bytes[..^4]); // truncated download
        var e = Assert.Throws<MLNetFinetune.Data.DataFileException>(() => SafeTensorsFile.Open(weights));
        Assert.Contains("tensor 'w' spans bytes 0..16, outside the 12-byte data section (truncated file?)", e.Message);
    }
}
