using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.TorchSharp.Modeling;
using Onnx;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.OnnxRuntime;

/// <summary>
/// The int4/int8 weight-only export against a reference written here: the test unpacks the graph's MatMulNBits and
/// GatherBlockQuantized initializers by the operators' published layout, writes the dequantized weights into a copy of
/// the model folder, and TorchSharp's float32 forward pass on that copy must give the quantized graph's logits.
/// </summary>
[Collection(TorchCollection.Name)]
public class QuantizedExportTests(ITestOutputHelper output) : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    // A tiny GPT-NeoX (untied head, biases) or Llama (tied head, grouped-query attention) with sharp, varied logits.
    string Saved(string family)
    {
        var config = family == "gpt_neox" ? ModelConfig.Preset("tiny", 320) : ModelConfig.Preset("tiny-llama", 320);
        manual_seed(5);
        using var model = new TransformerForCausalLM(config);
        using (no_grad()) foreach (var p in model.parameters()) if (p.dim() >= 2) p.mul_(5);
        string dir = Path.Combine(_dir.Path, family);
        HfCheckpoint.Save(model, TestTokenizers.Small(), dir);
        return dir;
    }

    static ModelProto Graph(string folder) => ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(folder, OnnxExporter.ModelFile)));

    static float[] Floats(TensorProto t) => t.RawData.Length > 0 ? System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(t.RawData.Span).ToArray() : t.FloatData.ToArray();

    static long Attribute(NodeProto node, string name) => node.Attribute.Single(a => a.Name == name).I;

    // (q − zero point) · scale, with q and the zero points unpacked from bytes: 8 bits one per byte; 4 bits two per byte,
    // the first in the low nibble. Blocks run along each row; the row's last block may be padded.
    static float[] Dequantize(byte[] data, float[] scales, byte[] zeroPoints, int rows, int columns, int bits, int block)
    {
        int blocks = (columns + block - 1) / block, rowBytes = blocks * block * bits / 8, zpRowBytes = (blocks * bits + 7) / 8;
        int Unpack(byte[] bytes, int offset, int i) => bits == 8 ? bytes[offset + i] : (i % 2 == 0 ? bytes[offset + i / 2] & 0x0F : bytes[offset + i / 2] >> 4);
        var w = new float[rows * columns];
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < columns; c++)
            {
                int b = c / block;
                w[r * columns + c] = (Unpack(data, r * rowBytes, c) - Unpack(zeroPoints, r * zpRowBytes, b)) * scales[r * blocks + b];
            }
        return w;
    }

    // The dequantized weight of every quantized initializer, by the checkpoint name it replaces. A MatMulNBits whose input
    // is first multiplied by a constant (AWQ's input scaling) computes (x·d)·Ŵᵀ = x·(Ŵ·diag(d))ᵀ: the divisor is folded
    // into the weight's columns.
    static Dictionary<string, float[]> DequantizedWeights(ModelProto model)
    {
        var initializers = model.Graph.Initializer.ToDictionary(t => t.Name);
        var producers = model.Graph.Node.SelectMany(n => n.Output.Select(o => (o, n))).ToDictionary(p => p.o, p => p.n);
        var weights = new Dictionary<string, float[]>();
        foreach (var node in model.Graph.Node.Where(n => n.Domain == "com.microsoft"))
        {
            if (node.OpType == "GatherBlockQuantized" && !initializers.ContainsKey(node.Input[0])) continue; // a tied table, read by MatMulNBits too
            var (data, scales, zeroPoints) = (initializers[node.Input[node.OpType == "GatherBlockQuantized" ? 0 : 1]], initializers[node.Input[2]], initializers[node.Input[3]]);
            int bits = (int)Attribute(node, "bits"), block = (int)Attribute(node, "block_size");
            int rows = (int)scales.Dims[0], columns = node.OpType == "MatMulNBits" ? (int)Attribute(node, "K") : (int)data.Dims[1] * 8 / bits;
            string name = data.Name[..^".quant".Length];
            var w = Dequantize(data.RawData.ToByteArray(), Floats(scales), zeroPoints.RawData.ToByteArray(), rows, columns, bits, block);
            if (node.OpType == "MatMulNBits" && producers.TryGetValue(node.Input[0], out var mul) && mul.OpType == "Mul" && mul.Input[1].EndsWith(".input_scale", StringComparison.Ordinal))
            {
                var d = Floats(initializers[mul.Input[1]]);
                for (int r = 0; r < rows; r++)
                    for (int c = 0; c < columns; c++) w[r * columns + c] *= d[c];
            }
            weights[name] = w;
        }
        return weights;
    }

    static readonly string[] CalibrationText =
    [
        "What is the capital of Chile? The capital of Chile is Santiago.", "Lima is the capital of Peru, on the Pacific coast.",
        "Which file holds the weights? model.safetensors, beside config.json and the tokenizer.",
    ];

    [Theory]
    [InlineData("gpt_neox", 4, 32, false)]
    [InlineData("gpt_neox", 8, 32, false)]
    [InlineData("llama", 4, 32, false)]
    [InlineData("llama", 4, 128, false)]
    [InlineData("gpt_neox", 8, 128, false)]
    [InlineData("gpt_neox", 4, 32, true)]
    [InlineData("llama", 4, 32, true)]
    public void QuantizedLogitsMatchTheDequantizedWeightsInFloat32(string family, int bits, int block, bool calibrated)
    {
        string dir = Saved(family);
        var statistics = calibrated ? ActivationCalibration.Collect(dir, CalibrationText, maxTokens: 200, rows: 48) : null;
        string onnx = OnnxExporter.Export(dir, new OnnxExportOptions
        {
            OutputDirectory = Path.Combine(_dir.Path, $"{family}-int{bits}-{block}-{calibrated}"),
            Quantization = new WeightQuantization { Bits = bits, BlockSize = block, AccuracyLevel = 1, Calibration = statistics }, // float32 compute: exact against the reference
        });
        var graph = Graph(onnx);
        const int layers = 2, hidden = 64; // both tiny presets
        int linears = family == "gpt_neox" ? 4 : 7;
        // The embedding is quantized when whole blocks tile its rows (else it stays float, and so does a tied head); a
        // block longer than a row is one padded block for MatMulNBits.
        bool embedding = hidden % block == 0, head = family == "gpt_neox" || embedding;
        Assert.Equal(layers * linears + (head ? 1 : 0), graph.Graph.Node.Count(n => n.OpType == "MatMulNBits"));
        Assert.Equal(embedding ? 1 : 0, graph.Graph.Node.Count(n => n.OpType == "GatherBlockQuantized"));
        Assert.DoesNotContain(graph.Graph.Node, n => n.OpType == "MatMul" && n.Input.Any(i => i.EndsWith(".weight.T", StringComparison.Ordinal)));
        Assert.Contains(graph.OpsetImport, o => o.Domain == "com.microsoft");

        // The reference: the checkpoint with every quantized weight replaced by its dequantized values, in float32.
        var dequantized = DequantizedWeights(graph);
        Assert.Equal(layers * linears + (head ? 1 : 0) + (family == "gpt_neox" && embedding ? 1 : 0), dequantized.Count); // a tied table once
        // AWQ scaled the input of some layers (not the head): a Mul by a constant in front of their MatMulNBits.
        int scaled = graph.Graph.Node.Count(n => n.OpType == "Mul" && n.Input[1].EndsWith(".input_scale", StringComparison.Ordinal));
        if (calibrated) Assert.InRange(scaled, 1, layers * linears);
        else Assert.Equal(0, scaled);
        string reference = Path.Combine(_dir.Path, $"{family}-dequantized-{bits}-{block}-{calibrated}");
        Directory.CreateDirectory(reference);
        foreach (var file in Directory.GetFiles(dir).Where(f => !f.EndsWith(".safetensors", StringComparison.Ordinal)))
            File.Copy(file, Path.Combine(reference, Path.GetFileName(file)));
        using (var original = SafeTensorsCheckpoint.Open(dir))
        {
            var layout = original.Tensors.Select(t => (t.Key, t.Value.Shape)).ToList();
            foreach (var (name, values) in dequantized)
            {
                float[] before = original.ReadFloat32(name);
                Assert.NotEqual(before, values); // it was quantized…
                if (!calibrated) Assert.True(Logits.MaxDiff(before, values) <= before.Max(Math.Abs) / (bits == 4 ? 7 : 127), $"{name}: rounding error beyond half a level"); // …by less than a level of its range
                else Assert.True(Logits.MaxDiff(before, values) <= before.Max(Math.Abs) / 2, $"{name}: the scaled weights and the input divisor do not cancel");
            }
            SafeTensorsCheckpoint.Save(reference, layout, name => dequantized.TryGetValue(name, out var w) ? w : original.ReadFloat32(name));
        }
        var (model, _) = HfCheckpoint.Load(reference, CPU);
        using var __ = model;
        model.eval();

        using var ort = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        long[] sequence = [5, 17, 42, 99, 7, 3, 250, 11, 64];
        var (logits, cache) = ort.Forward(sequence[..6], [0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1], 1, null);
        float[] Torch(long[] ids) { using var _ = no_grad(); return model.forward(tensor(ids, [1, ids.Length])).data<float>().ToArray(); }
        float worst = Logits.MaxDiff(Torch(sequence[..6]), logits);
        for (int t = 6; t < sequence.Length; t++)
        {
            var (step, next) = ort.Forward([sequence[t]], [t], Enumerable.Repeat(1L, t + 1).ToArray(), 1, cache);
            foreach (var v in cache) v.Dispose();
            cache = next;
            worst = Math.Max(worst, Logits.MaxDiff(Torch(sequence[..(t + 1)]).AsSpan(t * 320, 320), step));
        }
        foreach (var v in cache) v.Dispose();
        output.WriteLine($"{family} int{bits} block {block}{(calibrated ? $", AWQ-scaled layers: {scaled}" : "")}: max |quantized graph − dequantized float32| = {worst:G3} over a prefill and 3 cached steps");
        Assert.True(worst <= 1e-4f, $"max |quantized graph − dequantized reference| = {worst}");
    }

    [Fact]
    public void AnInt4ExportIsUnderAFifthOfFloat32AndItsInt8ComputeStaysClose()
    {
        string dir = Saved("gpt_neox");
        string fp32 = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "fp32") });
        // Blocks of 32: the tiny model's rows (64) are shorter than the default 128, which would leave its embedding float.
        string int4 = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "int4"), Quantization = new WeightQuantization { BlockSize = 32 } });
        string exact = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "int4-fp32-compute"), Quantization = new WeightQuantization { BlockSize = 32, AccuracyLevel = 1 } });
        double ratio = (double)OnnxExporter.SizeOf(int4) / OnnxExporter.SizeOf(fp32);
        output.WriteLine($"int4 file / float32 file = {ratio:F3}");
        Assert.InRange(ratio, 0.1, 0.2);
        Assert.All(Graph(int4).Graph.Node.Where(n => n.OpType == "MatMulNBits"), n => Assert.Equal(4, Attribute(n, "accuracy_level")));

        // Accuracy level 4 quantizes activations to int8 per block: close to the float32-compute graph, not equal.
        using var fast = OnnxCausalLM.Load(int4, "cpu", threads: 1);
        using var slow = OnnxCausalLM.Load(exact, "cpu", threads: 1);
        long[] ids = [5, 17, 42, 99, 7, 3];
        var (a, ca) = fast.Forward(ids, [0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1], 1, null);
        var (b, cb) = slow.Forward(ids, [0, 1, 2, 3, 4, 5], [1, 1, 1, 1, 1, 1], 1, null);
        foreach (var v in ca.Concat(cb)) v.Dispose();
        float spread = b.Max() - b.Min(), diff = Logits.MaxDiff(b, a);
        output.WriteLine($"int8 compute: max |Δlogit| = {diff:G3} against a logit range of {spread:G3}");
        Assert.True(diff > 0 && diff < 0.05 * spread, $"int8 compute moved logits by {diff} (range {spread})");

        // Greedy text through the shared decode loop, and a float16 int4 export on the CPU provider.
        var greedy = new GenerationOptions { MaxNewTokens = 8 };
        Assert.Equal(slow.Generate("What is the", greedy), fast.Generate("What is the", greedy));
        string half = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "int4-fp16"), Float16 = true, Quantization = new WeightQuantization { BlockSize = 32 } });
        using var fp16 = OnnxCausalLM.Load(half, "cpu", threads: 1);
        Assert.Equal(slow.Generate("What is the", greedy), fp16.Generate("What is the", greedy));

        // The default blocks of 128 are longer than this model's rows: MatMulNBits pads them, the embedding stays float.
        var byDefault = Graph(OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "int4-default"), Quantization = WeightQuantization.Int4 })).Graph;
        Assert.All(byDefault.Node.Where(n => n.OpType == "MatMulNBits"), n => Assert.Equal(128, Attribute(n, "block_size")));
        Assert.Contains(byDefault.Node, n => n.OpType == "Gather" && n.Input[0] == "gpt_neox.embed_in.weight");
    }

    [Fact]
    public void TheActivationAwareSearchNeverLosesToRoundingAndWinsWhereFewChannelsCarryTheSignal()
    {
        // A layer whose inputs are large on 4 of 64 channels (the outlier channels AWQ is about), with random weights.
        var random = new Random(3);
        int rows = 48, columns = 64, samples = 96;
        var weights = Enumerable.Range(0, rows * columns).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var inputs = new float[samples * columns];
        for (int s = 0; s < samples; s++)
            for (int c = 0; c < columns; c++) inputs[s * columns + c] = (float)(random.NextDouble() * 2 - 1) * (c % 16 == 0 ? 20 : 0.5f);
        var q = new WeightQuantization { BlockSize = 32 };
        var (_, scale, error, roundToNearest) = ActivationAwareScaling.Quantize(weights, rows, columns, inputs, q);
        output.WriteLine($"output error: round to nearest {roundToNearest:G4}, activation-aware {error:G4}");
        Assert.NotNull(scale);
        Assert.True(error < 0.8 * roundToNearest, $"AWQ's error {error} against rounding's {roundToNearest}");
        Assert.True(scale![0] > scale[1], "an outlier channel gets a larger scale (finer levels)");

        // Inputs alike on every channel: nothing to gain, and never worse than rounding.
        var flat = Enumerable.Range(0, samples * columns).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
        var (_, _, flatError, flatRounding) = ActivationAwareScaling.Quantize(weights, rows, columns, flat, q);
        Assert.True(flatError <= flatRounding);
    }

    [Fact]
    public void BadQuantizationSettingsAreRefusedBeforeAnythingIsWritten()
    {
        string dir = Saved("gpt_neox");
        string target = Path.Combine(_dir.Path, "refused");
        Assert.Contains("bits must be 4 or 8, not 3", Assert.Throws<ArgumentException>(() =>
            OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = target, Quantization = new WeightQuantization { Bits = 3 } })).Message);
        Assert.Contains("power of two of at least 16, not 24", Assert.Throws<ArgumentException>(() =>
            OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = target, Quantization = new WeightQuantization { BlockSize = 24 } })).Message);
        Assert.Contains("Unknown quantization 'int3'", Assert.Throws<ArgumentException>(() => WeightQuantization.Parse("int3")).Message);
        Assert.Contains("The calibration text is empty", Assert.Throws<ArgumentException>(() => ActivationCalibration.Collect(dir, [""])).Message);
        Assert.False(Directory.Exists(target));
        Assert.Null(WeightQuantization.Parse("none"));
        Assert.Equal(8, WeightQuantization.Parse("INT8")!.Bits);
    }
}
