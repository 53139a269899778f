using System.Text.Json;
using System.Text.Json.Nodes;
using Google.Protobuf;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using Onnx;
using static MLNetFinetune.Export.OnnxGraphBuilder;
using DataType = Onnx.TensorProto.Types.DataType;

namespace MLNetFinetune.Export;

/// <summary>Options of the ONNX export.</summary>
public sealed class OnnxExportOptions
{
    /// <summary>The folder to write (default: <c>onnx</c> inside the model directory).</summary>
    public string? OutputDirectory { get; init; }

    /// <summary>
    /// Store weights, activations and the KV cache in float16 (half the memory and bandwidth, for GPUs); logits stay
    /// float32. Default false: float32 throughout.
    /// </summary>
    public bool Float16 { get; init; }

    /// <summary>
    /// Weight-only quantization (<see cref="WeightQuantization.Int4"/>, <see cref="WeightQuantization.Int8"/>): linear
    /// layers become MatMulNBits, the embedding a GatherBlockQuantized. Null (default): float weights.
    /// </summary>
    public WeightQuantization? Quantization { get; init; }

    /// <summary>
    /// Calibration only: a float graph that also outputs every linear layer's input, named
    /// <see cref="OnnxExporter.CalibrationOutputPrefix"/> + the layer's weight name.
    /// </summary>
    internal bool CalibrationOutputs { get; init; }

    /// <summary>Write weights to <c>model.onnx.data</c> beside the graph above this many bytes (protobuf's limit is 2 GB).</summary>
    public long ExternalDataThreshold { get; init; } = 1_800_000_000;
}

/// <summary>
/// Writes a model directory (GPT-NeoX, or the Llama family: Llama, SmolLM2, Qwen2) as an ONNX graph with a KV cache,
/// reading only config.json and the safetensors weights (one file or shards), so exporting needs no libtorch. The cache
/// holds the key/value heads only (grouped-query attention keeps its smaller cache). TorchSharp cannot export ONNX; the
/// graph is built here, node by node, with OnnxSharp's generated protobuf classes. Inputs and outputs are named by
/// <see cref="OnnxContract"/>; batch and sequence axes dynamic; opset 17.
/// </summary>
public static class OnnxExporter
{
    /// <summary>The graph's file name.</summary>
    public const string ModelFile = "model.onnx";

    internal const string CalibrationOutputPrefix = "calibration:";

    /// <summary>The bytes of an exported folder's graph and weights (<c>model.onnx</c>, and <c>model.onnx.data</c> when there is one).</summary>
    public static long SizeOf(string folder) => Directory.GetFiles(folder, ModelFile + "*").Sum(f => new FileInfo(f).Length);

    /// <summary>
    /// Exports <paramref name="modelDirectory"/>; returns the folder written (model.onnx, genai_config.json, tokenizer, config).
    /// The files are built in a hidden folder beside the output and moved in only when all of them were written, so a
    /// failed export (bad weights, a missing tensor, a full disk) leaves nothing behind: no output folder if there was
    /// none, and an existing one as it was.
    /// </summary>
    public static string Export(string modelDirectory, OnnxExportOptions? options = null)
    {
        options ??= new OnnxExportOptions();
        options.Quantization?.Validate();
        if (options.CalibrationOutputs && options.Quantization != null) throw new ArgumentException("A calibration graph is float; it cannot be quantized.", nameof(options));
        var (config, tokenizer) = ModelDirectory.ReadConfigAndTokenizer(modelDirectory);
        string output = options.OutputDirectory ?? Path.Combine(modelDirectory, "onnx");
        using var weights = SafeTensorsCheckpoint.Open(modelDirectory);

        string full = Path.GetFullPath(output).TrimEnd(Path.DirectorySeparatorChar);
        string parent = Path.GetDirectoryName(full) ?? throw new ArgumentException($"'{output}' cannot be an export folder (it has no parent).", nameof(options));
        string? firstCreated = FirstMissing(parent); // the topmost folder this export creates above the output, if any
        string staging = Path.Combine(parent, $".{Path.GetFileName(full)}.export-{Path.GetRandomFileName()}");
        Directory.CreateDirectory(staging);
        try
        {
            long bytes = weights.Tensors.Values.Sum(t => t.ElementCount * (options.Float16 ? 2 : 4));
            if (options.Quantization is { } quantization) bytes = bytes * quantization.Bits / (options.Float16 ? 16 : 32) * 5 / 4; // scales and zero points included
            string modelPath = Path.Combine(staging, ModelFile);
            bool useExternal = bytes > options.ExternalDataThreshold;
            using (var external = useExternal ? new ExternalData(modelPath + ".data", ModelFile + ".data") : null)
            {
                var model = Build(config, weights, external, options.Float16 ? DataType.Float16 : DataType.Float, options.Quantization, options.CalibrationOutputs);
                DataFiles.WriteAtomically(modelPath, s => model.WriteTo(s));
            }
            ModelDirectory.WriteConfigAndTokenizer(staging, config, tokenizer);
            WriteGenAiConfig(Path.Combine(staging, "genai_config.json"), config, tokenizer.PadId ?? config.EosTokenId);
            PromptFormats.Copy(modelDirectory, staging);

            if (!Directory.Exists(full)) Directory.Move(staging, full);
            else
            {
                // Into an existing folder: replace only the files of an export, then drop what an earlier export wrote and
                // this one does not (the weights file of a larger export; the prompt format of a finetuned model).
                foreach (string file in Directory.GetFiles(staging))
                    File.Move(file, Path.Combine(full, Path.GetFileName(file)), overwrite: true);
                Directory.Delete(staging);
                if (!useExternal) File.Delete(Path.Combine(full, ModelFile + ".data"));
                foreach (string file in new[] { PromptFormats.FormatFile, PromptFormats.TokenizerConfigFile })
                    if (!File.Exists(Path.Combine(modelDirectory, file))) File.Delete(Path.Combine(full, file));
            }
        }
        catch
        {
            try
            {
                if (Directory.Exists(staging)) Directory.Delete(staging, recursive: true);
                if (firstCreated != null && Directory.Exists(firstCreated)) Directory.Delete(firstCreated, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { } // keep the original error
            throw;
        }
        return output;
    }

    // The topmost folder of path (itself included) that does not exist yet; null when path exists.
    static string? FirstMissing(string path)
    {
        string? missing = null;
        for (string? dir = path; dir != null && !Directory.Exists(dir); dir = Path.GetDirectoryName(dir)) missing = dir;
        return missing;
    }

    static ModelProto Build(ModelConfig c, SafeTensorsCheckpoint weights, ExternalData? external, DataType floatType, WeightQuantization? quantization, bool calibrationOutputs)
    {
        var g = new OnnxGraphBuilder { FloatType = floatType };
        g.Graph.Name = c.ModelType;
        int heads = c.NumAttentionHeads, kvHeads = c.KeyValueHeads, headDim = c.HeadDim, rot = c.RotaryDim;
        g.Input(OnnxContract.InputIds, DataType.Int64, "batch", "sequence");
        g.Input(OnnxContract.AttentionMask, DataType.Int64, "batch", "total_sequence");
        g.Input(OnnxContract.PositionIds, DataType.Int64, "batch", "sequence");
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            g.Input(OnnxContract.PastKey(i), floatType, "batch", kvHeads.ToString(), "past_sequence", headDim.ToString());
            g.Input(OnnxContract.PastValue(i), floatType, "batch", kvHeads.ToString(), "past_sequence", headDim.ToString());
        }

        string W(string name) => g.Weight(name, weights.Tensors[name].Shape, weights.ReadFloat32(name), external);
        // Linear layers keep PyTorch's [out, in] weights; MatMul wants [in, out], so they are stored transposed.
        string WT(string name)
        {
            var shape = weights.Tensors[name].Shape;
            float[] w = weights.ReadFloat32(name), t = new float[w.Length];
            long rows = shape[0], cols = shape[1];
            for (long r = 0; r < rows; r++)
                for (long k = 0; k < cols; k++) t[k * rows + r] = w[r * cols + k];
            return g.Weight(name + ".T", [cols, rows], t, external);
        }
        // A quantized weight as MatMulNBits and GatherBlockQuantized read it: the packed blocks [rows, blocks, blob] (rows
        // are PyTorch's output features, so no transpose), the scales in the graph's float type, the packed zero points.
        (string Data, string Scales, string ZeroPoints, BlockQuantizedMatrix Matrix) Quantize(string name, WeightQuantization q, bool flatRows = false)
            => Initializers(name, BlockQuantizedMatrix.Quantize(weights.ReadFloat32(name), (int)weights.Tensors[name].Shape[0], (int)weights.Tensors[name].Shape[1], q.Bits, q.BlockSize), flatRows);
        (string Data, string Scales, string ZeroPoints, BlockQuantizedMatrix Matrix) Initializers(string name, BlockQuantizedMatrix m, bool flatRows = false)
        {
            long[] dataShape = flatRows ? [m.Rows, (long)m.Blocks * m.BlobBytes] : [m.Rows, m.Blocks, m.BlobBytes];
            return (g.Bytes(name + ".quant", dataShape, m.Data, external), g.Weight(name + ".scales", [m.Rows, m.Blocks], m.Scales, external),
                g.Bytes(name + ".zero_points", [m.Rows, m.ZeroPointBytesPerRow], m.ZeroPoints, external), m);
        }
        string MatMulNBits(string x, (string Data, string Scales, string ZeroPoints, BlockQuantizedMatrix Matrix) q, string? bias, WeightQuantization options) =>
            g.MicrosoftNode("MatMulNBits", bias == null ? [x, q.Data, q.Scales, q.ZeroPoints] : [x, q.Data, q.Scales, q.ZeroPoints, "", bias],
                Int("K", q.Matrix.Columns), Int("N", q.Matrix.Rows), Int("bits", options.Bits), Int("block_size", options.BlockSize), Int("accuracy_level", options.AccuracyLevel));
        // The head (calibrate: false) is always rounded to nearest: AWQ leaves it alone, and its search would be costly.
        string Linear(string x, string prefix, bool bias = true, bool quantize = true, bool calibrate = true)
        {
            string weight = prefix + ".weight";
            if (quantization != null && quantize)
            {
                string? b = bias ? W(prefix + ".bias") : null;
                if (!calibrate || quantization.Calibration?.Inputs.TryGetValue(weight, out var inputs) != true)
                    return MatMulNBits(x, Quantize(weight, quantization), b, quantization);
                var shape = weights.Tensors[weight].Shape;
                var (m, inputScale, _, _) = ActivationAwareScaling.Quantize(weights.ReadFloat32(weight), (int)shape[0], (int)shape[1], inputs!, quantization);
                if (inputScale != null) x = g.Node("Mul", [x, g.Weight(weight + ".input_scale", [inputScale.Length], inputScale.Select(v => 1 / v).ToArray(), external)]);
                return MatMulNBits(x, Initializers(weight, m), b, quantization);
            }
            if (calibrationOutputs && calibrate)
                g.Output(g.Node("Identity", [x]), OnnxExporter.CalibrationOutputPrefix + weight, floatType, "batch", "sequence", weights.Tensors[weight].Shape[1].ToString());
            string y = g.Node("MatMul", [x, WT(weight)]);
            return bias ? g.Node("Add", [y, W(prefix + ".bias")]) : y;
        }
        string rmsTwo = "", rmsEpsilon = ""; // RMSNorm's float32 constants, made once below
        string Norm(string x, string prefix)
        {
            if (c.IsGptNeoX)
                return g.Node("LayerNormalization", [x, W(prefix + ".weight"), W(prefix + ".bias")], Int("axis", -1), Float("epsilon", (float)c.LayerNormEps));
            // RMSNorm as HF's LlamaRMSNorm: x / sqrt(mean(x²) + eps) in float32 even in a float16 graph (x² overflows
            // float16 once |x| passes 256), cast back, then times the weight.
            string x32 = floatType == DataType.Float ? x : g.Node("Cast", [x], Int("to", (long)DataType.Float));
            string meanSquare = g.Node("ReduceMean", [g.Node("Pow", [x32, rmsTwo])], Ints("axes", -1), Int("keepdims", 1));
            string normed = g.Node("Div", [x32, g.Node("Sqrt", [g.Node("Add", [meanSquare, rmsEpsilon])])]);
            if (floatType != DataType.Float) normed = g.Node("Cast", [normed], Int("to", (long)floatType));
            return g.Node("Mul", [normed, W(prefix + ".weight")]);
        }

        // Shapes: past length P, new length S, total T = P + S.
        string idsShape = g.Node("Shape", [OnnxContract.InputIds]);
        string seq = g.Node("Gather", [idsShape, g.Constant([1], [])], Int("axis", 0));
        string pastShape = g.Node("Shape", [OnnxContract.PastKey(0)]);
        string past = g.Node("Gather", [pastShape, g.Constant([2], [])], Int("axis", 0));
        string total = g.Node("Add", [past, seq]);

        // Mask [batch, 1, S, T]: a key is visible when it is not padding and not after the query (queries sit at P..T-1).
        string zero = g.Constant([0], []), one = g.Constant([1], []);
        string queries = g.Node("Unsqueeze", [g.Node("Range", [past, total, one]), g.Constant([1])]);       // [S, 1]
        string keys = g.Node("Unsqueeze", [g.Node("Range", [zero, total, one]), g.Constant([0])]);          // [1, T]
        string causal = g.Node("Unsqueeze", [g.Node("LessOrEqual", [keys, queries]), g.Constant([0, 1])]); // [1, 1, S, T]
        string padding = g.Node("Unsqueeze", [g.Node("Cast", [OnnxContract.AttentionMask], Int("to", (long)DataType.Bool)), g.Constant([1, 2])]); // [B, 1, 1, T]
        string visible = g.Node("And", [causal, padding]);
        string bias = g.Node("Where", [visible, g.Scalar(0f), g.Scalar(floatType == DataType.Float16 ? -65504f : float.MinValue)]);

        // Rotary angles from position ids, once per step for every layer: cos and sin [B, 1, S, head_dim], padded past
        // the rotary dimensions with 1 and 0 so that the pass-through dimensions of a partial rotary come out unchanged.
        string cos = "", sin = "", rotateHalf = "";
        if (rot > 0)
        {
            // Angles in float32 whatever the graph's type: positions up to thousands lose too much in float16. The
            // frequencies (rope_scaling included) are the TorchSharp model's, computed by the same function.
            string freq = g.Weight("rotary.inv_freq", [1, 1, rot / 2], RotaryFrequencies.Of(c), null, DataType.Float);
            string positions = g.Node("Unsqueeze", [g.Node("Cast", [OnnxContract.PositionIds], Int("to", (long)DataType.Float)), g.Constant([2])]);
            string angles = g.Node("Mul", [positions, freq]);
            string both = g.Node("Concat", [angles, angles], Int("axis", -1));
            string Padded(string x, float value) => rot == headDim ? x
                : g.Node("Pad", [x, g.Constant([0, 0, 0, 0, 0, headDim - rot]), g.Scalar(value, DataType.Float)]);
            cos = g.Node("Unsqueeze", [Padded(g.Node("Cos", [both]), 1), g.Constant([1])]);
            sin = g.Node("Unsqueeze", [Padded(g.Node("Sin", [both]), 0), g.Constant([1])]);
            if (floatType != DataType.Float)
            {
                cos = g.Node("Cast", [cos], Int("to", (long)floatType));
                sin = g.Node("Cast", [sin], Int("to", (long)floatType));
            }
            // rotate_half (x₁, x₂ → −x₂, x₁ over the rotary dimensions) as a product with a signed permutation matrix:
            // one small MatMul instead of slices, a negation and concatenations for each of q and k in every layer (each
            // output is one ±x term, so the product is exact). A decoding step runs some 200 small nodes besides the
            // weight products, and their count, not their arithmetic, is much of what a 4-bit model's step costs.
            var permutation = new float[headDim * headDim];
            for (int j = 0; j < rot / 2; j++)
            {
                permutation[(j + rot / 2) * headDim + j] = -1;
                permutation[j * headDim + j + rot / 2] = 1;
            }
            rotateHalf = g.Weight("rotary.rotate_half", [headDim, headDim], permutation, null);
        }
        string Slice(string x, long start, long end) => g.Node("Slice", [x, g.Constant([start]), g.Constant([end]), g.Constant([3])]);
        string Rotate(string x) => rot == 0 ? x
            : g.Node("Add", [g.Node("Mul", [x, cos]), g.Node("Mul", [g.Node("MatMul", [x, rotateHalf]), sin])]);

        string embeddingName = c.IsGptNeoX ? "gpt_neox.embed_in.weight" : "model.embed_tokens.weight";
        string embedding = "", hidden;
        // GatherBlockQuantized reads rows of [vocab, hidden · bits / 8] bytes: the blocks must tile the row exactly, else
        // the embedding stays float. A tied head reads the same bytes as MatMulNBits' [vocab, blocks, blob] (one copy in
        // the file, reshaped for the gather).
        (string Data, string Scales, string ZeroPoints, BlockQuantizedMatrix Matrix)? quantizedEmbedding = null;
        if (quantization is { Embedding: true } && c.HiddenSize % quantization.BlockSize == 0)
        {
            var q = Quantize(embeddingName, quantization, flatRows: !c.TieWordEmbeddings);
            string rows = c.TieWordEmbeddings ? g.Node("Reshape", [q.Data, g.Constant([q.Matrix.Rows, (long)q.Matrix.Blocks * q.Matrix.BlobBytes])]) : q.Data;
            hidden = g.MicrosoftNode("GatherBlockQuantized", [rows, OnnxContract.InputIds, q.Scales, q.ZeroPoints],
                Int("gather_axis", 0), Int("quantize_axis", 1), Int("block_size", quantization.BlockSize), Int("bits", quantization.Bits));
            quantizedEmbedding = q;
        }
        else
        {
            embedding = W(embeddingName);
            hidden = g.Node("Gather", [embedding, OnnxContract.InputIds], Int("axis", 0));
        }
        string scale = g.Scalar((float)(1 / Math.Sqrt(headDim)));
        string sqrtTwo = "", half = "", unit = "", groups = "", groupAxis = "";
        if (c.IsGptNeoX) (sqrtTwo, half, unit) = (g.Scalar((float)Math.Sqrt(2)), g.Scalar(0.5f), g.Scalar(1f));
        else (rmsTwo, rmsEpsilon) = (g.Scalar(2f, DataType.Float), g.Scalar((float)c.RmsNormEps, DataType.Float));
        if (kvHeads != heads) (groupAxis, groups) = (g.Constant([2]), g.Constant([1, 1, heads / kvHeads, 1, 1]));
        // Grouped-query attention: the cache holds only the key/value heads; for attention each is repeated for the
        // heads / kv heads query heads that read it ([B, kv, T, D] → [B, kv, groups, T, D] → [B, heads, T, D]), so
        // query head h reads key/value head h / (heads / kv heads), as HF's repeat_kv does.
        string RepeatKv(string x) => kvHeads == heads ? x
            : g.Node("Reshape", [g.Node("Expand", [g.Node("Unsqueeze", [x, groupAxis]), groups]), g.Constant([0, heads, -1, headDim])]);
        // [B, S, n · head_dim] → [B, n, S, head_dim].
        string SplitHeads(string x, int n) => g.Node("Transpose", [g.Node("Reshape", [x, g.Constant([0, 0, n, headDim])])], Ints("perm", 0, 2, 1, 3));
        bool parallel = c.IsGptNeoX && c.UseParallelResidual;
        for (int i = 0; i < c.NumHiddenLayers; i++)
        {
            string p = c.IsGptNeoX ? $"gpt_neox.layers.{i}" : $"model.layers.{i}";
            string ln1 = Norm(hidden, p + ".input_layernorm");
            string q, k, v, attentionOut;
            if (c.IsGptNeoX)
            {
                string qkv = Linear(ln1, p + ".attention.query_key_value", c.QkvBias);
                // HF layout: [heads, 3, head_dim] per position.
                string qkv4 = g.Node("Transpose", [g.Node("Reshape", [qkv, g.Constant([0, 0, heads, 3 * headDim])])], Ints("perm", 0, 2, 1, 3));
                q = Rotate(Slice(qkv4, 0, headDim));
                k = Rotate(Slice(qkv4, headDim, 2 * headDim));
                v = Slice(qkv4, 2 * headDim, 3 * headDim);
                attentionOut = p + ".attention.dense";
            }
            else
            {
                q = Rotate(SplitHeads(Linear(ln1, p + ".self_attn.q_proj", c.QkvBias), heads));
                k = Rotate(SplitHeads(Linear(ln1, p + ".self_attn.k_proj", c.QkvBias), kvHeads));
                v = SplitHeads(Linear(ln1, p + ".self_attn.v_proj", c.QkvBias), kvHeads);
                attentionOut = p + ".self_attn.o_proj";
            }
            string presentK = g.Node("Concat", [OnnxContract.PastKey(i), k], Int("axis", 2));
            string presentV = g.Node("Concat", [OnnxContract.PastValue(i), v], Int("axis", 2));
            presentK = g.Output(presentK, OnnxContract.PresentKey(i), floatType, "batch", kvHeads.ToString(), "total_sequence", headDim.ToString());
            presentV = g.Output(presentV, OnnxContract.PresentValue(i), floatType, "batch", kvHeads.ToString(), "total_sequence", headDim.ToString());
            string scores = g.Node("Add", [g.Node("Mul", [g.Node("MatMul", [q, g.Node("Transpose", [RepeatKv(presentK)], Ints("perm", 0, 1, 3, 2))]), scale]), bias]);
            string attended = g.Node("MatMul", [g.Node("Softmax", [scores], Int("axis", -1)), RepeatKv(presentV)]);
            string merged = g.Node("Reshape", [g.Node("Transpose", [attended], Ints("perm", 0, 2, 1, 3)), g.Constant([0, 0, heads * headDim])]);
            string attention = Linear(merged, attentionOut, c.OutputBias);

            string mlpInput = parallel ? hidden : g.Node("Add", [hidden, attention]);
            string ln2 = Norm(mlpInput, p + ".post_attention_layernorm");
            string mlp;
            if (c.IsGptNeoX)
            {
                string up = Linear(ln2, p + ".mlp.dense_h_to_4h");
                string gelu = c.HiddenAct == "gelu"
                    // x · (erf(x / √2) + 1) · 0.5, in the node order ONNX Runtime fuses into one Gelu kernel.
                    ? g.Node("Mul", [g.Node("Mul", [up, g.Node("Add", [g.Node("Erf", [g.Node("Div", [up, sqrtTwo])]), unit])]), half])
                    : TanhGelu(g, up);
                mlp = Linear(gelu, p + ".mlp.dense_4h_to_h");
            }
            else
            {
                // SwiGLU: down(silu(gate(x)) · up(x)), silu(x) = x · sigmoid(x).
                string gate = Linear(ln2, p + ".mlp.gate_proj", c.MlpBias);
                string silu = g.Node("Mul", [gate, g.Node("Sigmoid", [gate])]);
                mlp = Linear(g.Node("Mul", [silu, Linear(ln2, p + ".mlp.up_proj", c.MlpBias)]), p + ".mlp.down_proj", c.MlpBias);
            }
            hidden = parallel ? g.Node("Add", [g.Node("Add", [hidden, attention]), mlp]) : g.Node("Add", [mlpInput, mlp]);
        }
        string final = Norm(hidden, c.IsGptNeoX ? "gpt_neox.final_layer_norm" : "model.norm");
        // A tied head multiplies by the transposed input embedding: a Transpose of the one stored initializer (or
        // MatMulNBits over its quantized rows, whose layout is already [vocab, hidden]), so the file does not hold the
        // vocabulary table twice. A tied head is quantized when the embedding is.
        string logits = !c.TieWordEmbeddings ? Linear(final, c.IsGptNeoX ? "embed_out" : "lm_head", bias: false, quantize: quantization?.Head == true, calibrate: false)
            : quantizedEmbedding is { } tied ? MatMulNBits(final, tied, null, quantization!)
            : g.Node("MatMul", [final, g.Node("Transpose", [embedding], Ints("perm", 1, 0))]);
        if (floatType != DataType.Float) logits = g.Node("Cast", [logits], Int("to", (long)DataType.Float));
        g.Output(logits, OnnxContract.Logits, DataType.Float, "batch", "sequence", c.VocabSize.ToString());

        var model = new ModelProto { IrVersion = 8, ProducerName = "MLNetFinetune", ProducerVersion = "1", Graph = g.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        if (quantization != null) model.OpsetImport.Add(new OperatorSetIdProto { Domain = OnnxGraphBuilder.MicrosoftDomain, Version = 1 });
        return model;
    }

    // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), the approximation gelu_new / gelu_pytorch_tanh name.
    static string TanhGelu(OnnxGraphBuilder g, string x)
    {
        string cube = g.Node("Mul", [g.Node("Mul", [x, x]), x]);
        string inner = g.Node("Mul", [g.Node("Add", [x, g.Node("Mul", [cube, g.Scalar(0.044715f)])]), g.Scalar((float)Math.Sqrt(2 / Math.PI))]);
        return g.Node("Mul", [g.Node("Mul", [x, g.Scalar(0.5f)]), g.Node("Add", [g.Scalar(1f), g.Node("Tanh", [inner])])]);
    }

    // ONNX Runtime GenAI's description of the folder: the decoder's inputs and outputs and the search defaults. The
    // Llama family keeps its model type (GenAI knows "llama" and "qwen2"); GenAI has no gpt_neox type, and "llama" selects
    // the same generic decoder-only pipeline, which relies only on the input and output names below and the cache's
    // shape (key/value heads × head size; the architecture itself is in the graph). The interop tests run both under GenAI.
    static void WriteGenAiConfig(string path, ModelConfig c, int padId)
    {
        var model = new JsonObject
        {
            ["eos_token_id"] = c.EosTokenIds.Count == 1 ? c.EosTokenId : new JsonArray(c.EosTokenIds.Select(id => (JsonNode)id).ToArray()),
            ["pad_token_id"] = padId, ["vocab_size"] = c.VocabSize, ["context_length"] = c.MaxPositionEmbeddings,
            ["type"] = c.IsGptNeoX ? "llama" : c.ModelType,
            ["decoder"] = new JsonObject
            {
                ["filename"] = ModelFile, ["head_size"] = c.HeadDim, ["hidden_size"] = c.HiddenSize,
                ["num_attention_heads"] = c.NumAttentionHeads, ["num_key_value_heads"] = c.KeyValueHeads, ["num_hidden_layers"] = c.NumHiddenLayers,
                ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                ["inputs"] = new JsonObject
                {
                    ["input_ids"] = OnnxContract.InputIds, ["attention_mask"] = OnnxContract.AttentionMask, ["position_ids"] = OnnxContract.PositionIds,
                    ["past_key_names"] = OnnxContract.PastKeyPattern, ["past_value_names"] = OnnxContract.PastValuePattern,
                },
                ["outputs"] = new JsonObject { ["logits"] = OnnxContract.Logits, ["present_key_names"] = OnnxContract.PresentKeyPattern, ["present_value_names"] = OnnxContract.PresentValuePattern },
            },
        };
        // GenAI reads token ids as numbers and fails on null; published configs may leave bos_token_id null.
        if (c.BosTokenId is int bos) model.Insert(0, "bos_token_id", bos);
        var json = new JsonObject
        {
            ["model"] = model,
            ["search"] = new JsonObject
            {
                ["do_sample"] = false, ["max_length"] = c.MaxPositionEmbeddings, ["min_length"] = 0, ["num_beams"] = 1, ["num_return_sequences"] = 1,
                ["past_present_share_buffer"] = false, ["repetition_penalty"] = 1.0, ["temperature"] = 1.0, ["top_k"] = 1, ["top_p"] = 1.0,
            },
        };
        DataFiles.WriteJson(path, json);
    }
}
