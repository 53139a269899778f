using MLNetFinetune.ModelFiles;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>
/// The GPT-NeoX decoder of the Pythia family, driven by one <see cref="GptNeoXConfig"/>. Module fields carry the
/// Hugging Face names, so the parameter names are HF's (<c>gpt_neox.layers.0.attention.query_key_value.weight</c>, …)
/// and the fused QKV weight keeps HF's head-interleaved layout: a checkpoint loads without renaming or reordering.
/// </summary>
public sealed class GptNeoXForCausalLM : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // HF parameter names
    readonly GptNeoXBackbone gpt_neox;
    readonly Linear embed_out;
#pragma warning restore IDE1006

    readonly ComputePrecision _precision = new();

    /// <summary>A model of the given shape with freshly initialised weights (normal, std = initializer_range; zero biases).</summary>
    public GptNeoXForCausalLM(GptNeoXConfig config) : base("GPTNeoXForCausalLM")
    {
        Config = config.Validated("the model config");
        gpt_neox = new GptNeoXBackbone(config, _precision);
        embed_out = Linear(config.HiddenSize, config.VocabSize, hasBias: false);
        RegisterComponents();
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal)) init.zeros_(p);
            else if (name.Contains("layernorm", StringComparison.Ordinal) || name.Contains("layer_norm", StringComparison.Ordinal)) init.ones_(p);
            else init.normal_(p, 0, config.InitializerRange);
        }
    }

    /// <summary>The shape.</summary>
    public GptNeoXConfig Config { get; }

    /// <summary>
    /// Mixed precision: when set (bfloat16 on CUDA), every matrix product runs in this type on a cast of the float32
    /// weights, while embeddings, LayerNorm, the residual stream, the loss and the weights themselves stay float32,
    /// as PyTorch's autocast does (TorchSharp has no autocast). Null (default) computes in float32.
    /// </summary>
    public ScalarType? ComputeType
    {
        get => _precision.Type;
        set => _precision.Type = value;
    }

    /// <summary>The LoRA adapters in use, or null.</summary>
    public LoraAdapters? Lora => _precision.Lora;

    /// <summary>
    /// Adds LoRA adapters to the targeted layers and freezes every base weight: training then updates only the
    /// adapters (<see cref="TrainableParameters"/>).
    /// </summary>
    public LoraAdapters AttachLora(LoraOptions options)
    {
        options.Validate();
        if (_precision.Lora != null) throw new InvalidOperationException("The model already has LoRA adapters; merge or detach them first.");
        var layers = named_modules().Where(m => m.module is Linear && options.TargetModules.Contains(m.name.Split('.')[^1]))
            .Select(m => (m.name, (Linear)m.module)).ToList();
        foreach (var p in parameters()) p.requires_grad = false;
        _precision.Lora = new LoraAdapters(options, layers, parameters().First().device);
        return _precision.Lora;
    }

    /// <summary>Folds the adapters into the weights (W ← W + (alpha/r)·B·A), removes them and unfreezes the model: a plain model again.</summary>
    public void MergeLora()
    {
        var lora = _precision.Lora ?? throw new InvalidOperationException("The model has no LoRA adapters to merge.");
        using (no_grad())
        {
            foreach (var (layer, (_, a, b)) in lora.Pairs)
                layer.weight!.add_(b.matmul(a), alpha: lora.Scale);
        }
        _precision.Lora = null;
        lora.Dispose();
        foreach (var p in parameters()) p.requires_grad = true;
    }

    /// <summary>What the optimizer updates: the adapters when LoRA is attached, else every weight.</summary>
    public IEnumerable<Parameter> TrainableParameters() => _precision.Lora?.Parameters() ?? parameters();

    /// <summary>Logits <c>[batch, seq, vocab]</c> (float32) for token ids <c>[batch, seq]</c> (int64), causally masked.</summary>
    public override Tensor forward(Tensor inputIds) => Forward(inputIds);

    /// <summary>
    /// Logits <c>[batch, seq, vocab]</c> (float32) for token ids <c>[batch, seq]</c> (int64). <paramref name="positionIds"/>
    /// <c>[batch, seq]</c> default to 0.. (after the cache's length); <paramref name="attentionMask"/> is a boolean
    /// <c>[batch, 1, seq, past + seq]</c> "may attend" mask (<see cref="AttentionMasks"/>), default causal; with a
    /// <paramref name="cache"/> the new keys and values are appended to it and attention covers past and new tokens.
    /// </summary>
    public Tensor Forward(Tensor inputIds, Tensor? positionIds = null, Tensor? attentionMask = null, KeyValueCache? cache = null)
    {
        // SDPA adds a float mask to the scores, so an HF-style 0/1 padding mask would be silently wrong here.
        if (attentionMask is not null && (attentionMask.dtype != ScalarType.Bool || attentionMask.dim() != 4))
            throw new ArgumentException($"attentionMask must be a boolean [batch, 1, seq, past + seq] mask (AttentionMasks builds one), not {attentionMask.dtype} [{string.Join(", ", attentionMask.shape)}].", nameof(attentionMask));
        _precision.Training = training;
        var logits = _precision.Linear(embed_out, gpt_neox.Forward(inputIds, positionIds, attentionMask, cache));
        return logits.dtype == float32 ? logits : logits.to(float32);
    }

    /// <summary>A cache for <paramref name="batch"/> rows of up to <paramref name="capacity"/> tokens, on the model's device.</summary>
    public KeyValueCache NewCache(long batch, long capacity) =>
        new(Config.NumHiddenLayers, batch, Config.NumAttentionHeads, capacity, Config.HeadDim, parameters().First().device);

    /// <summary>
    /// Mean next-token cross-entropy: logits at position t are scored against labels at t + 1, positions labelled
    /// −100 are ignored (the Hugging Face convention, so prompt masking works unchanged).
    /// </summary>
    public Tensor Loss(Tensor inputIds, Tensor labels, Reduction reduction = Reduction.Mean) => Loss(inputIds, labels, null, null, reduction);

    /// <summary>The loss of <see cref="Loss(Tensor, Tensor, Reduction)"/> with explicit positions and attention mask (packed examples).</summary>
    public Tensor Loss(Tensor inputIds, Tensor labels, Tensor? positionIds, Tensor? attentionMask, Reduction reduction = Reduction.Mean)
    {
        using var logits = Forward(inputIds, positionIds, attentionMask);
        return LossFromLogits(logits, labels, reduction);
    }

    /// <summary>The loss of <see cref="Loss(Tensor, Tensor, Reduction)"/> from logits already computed (labels aligned with the inputs).</summary>
    public static Tensor LossFromLogits(Tensor logits, Tensor labels, Reduction reduction = Reduction.Mean)
    {
        // Shift the labels, not the logits: slicing [batch, seq − 1, vocab] out of the logits would copy the largest
        // activation (3 GB at 8 × 2048 × 50k); the last position gets the ignore index instead.
        using var scope = NewDisposeScope();
        var targets = cat([labels[.., 1..], full(labels.shape[0], 1, -100L, dtype: labels.dtype, device: labels.device)], 1);
        return functional.cross_entropy(logits.view(-1, logits.shape[2]), targets.view(-1), ignore_index: -100, reduction: reduction)
            .MoveToOuterDisposeScope();
    }
}

/// <summary><c>gpt_neox</c>: token embedding, the layers, the final LayerNorm.</summary>
sealed class GptNeoXBackbone : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    readonly Embedding embed_in;
    readonly ModuleList<GptNeoXLayer> layers;
    readonly LayerNorm final_layer_norm;
#pragma warning restore IDE1006
    readonly Rotary _rotary;

    public GptNeoXBackbone(GptNeoXConfig c, ComputePrecision precision) : base("GPTNeoXModel")
    {
        embed_in = Embedding(c.VocabSize, c.HiddenSize);
        layers = new ModuleList<GptNeoXLayer>(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new GptNeoXLayer(c, precision)).ToArray());
        final_layer_norm = LayerNorm(c.HiddenSize, c.LayerNormEps);
        _rotary = new Rotary(c.RotaryDim, c.RotaryEmbBase);
        RegisterComponents();
    }

    public override Tensor forward(Tensor inputIds) => Forward(inputIds, null, null, null);

    public Tensor Forward(Tensor inputIds, Tensor? positionIds, Tensor? mask, KeyValueCache? cache)
    {
        using var scope = NewDisposeScope();
        long seq = inputIds.shape[1], past = cache?.Length ?? 0;
        if (positionIds is null && past > 0) positionIds = arange(past, past + seq, dtype: int64, device: inputIds.device).unsqueeze(0);
        // Plain causal attention from position 0 (training) keeps SDPA's causal kernel and the [seq, dim] rotary table.
        var (cos, sin) = positionIds is null ? _rotary.Table(seq, inputIds.device) : _rotary.Table(positionIds);
        if (mask is null && past > 0 && seq > 1) mask = AttentionMasks.Causal(seq, past, inputIds.device);
        Tensor x = embed_in.forward(inputIds);
        for (int i = 0; i < layers.Count; i++) x = layers[i].Forward(x, cos, sin, mask, cache, i, causal: mask is null && past == 0);
        cache?.Advance(seq);
        return final_layer_norm.forward(x).MoveToOuterDisposeScope();
    }
}

/// <summary>One transformer layer: attention and MLP, in parallel (Pythia) or in sequence.</summary>
sealed class GptNeoXLayer : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    readonly LayerNorm input_layernorm;
    readonly LayerNorm post_attention_layernorm;
    readonly GptNeoXAttention attention;
    readonly GptNeoXMlp mlp;
#pragma warning restore IDE1006
    readonly bool _parallel;

    public GptNeoXLayer(GptNeoXConfig c, ComputePrecision precision) : base("GPTNeoXLayer")
    {
        input_layernorm = LayerNorm(c.HiddenSize, c.LayerNormEps);
        post_attention_layernorm = LayerNorm(c.HiddenSize, c.LayerNormEps);
        attention = new GptNeoXAttention(c, precision);
        mlp = new GptNeoXMlp(c, precision);
        _parallel = c.UseParallelResidual;
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new InvalidOperationException("Call Forward(x, cos, sin, …).");

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, int index, bool causal)
    {
        var attended = attention.Forward(input_layernorm.forward(x), cos, sin, mask, cache, index, causal);
        if (_parallel) return x + attended + mlp.forward(post_attention_layernorm.forward(x));
        var h = x + attended;
        return h + mlp.forward(post_attention_layernorm.forward(h));
    }
}

/// <summary>Causal self-attention with rotary position embedding on the first <c>rotary_dim</c> dimensions of each head.</summary>
sealed class GptNeoXAttention : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    readonly Linear query_key_value;
    readonly Linear dense;
#pragma warning restore IDE1006
    readonly int _heads, _headDim, _rotaryDim;
    readonly ComputePrecision _precision;

    public GptNeoXAttention(GptNeoXConfig c, ComputePrecision precision) : base("GPTNeoXAttention")
    {
        _precision = precision;
        query_key_value = Linear(c.HiddenSize, 3 * c.HiddenSize, hasBias: c.AttentionBias);
        dense = Linear(c.HiddenSize, c.HiddenSize, hasBias: c.AttentionBias);
        (_heads, _headDim, _rotaryDim) = (c.NumAttentionHeads, c.HeadDim, c.RotaryDim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) => throw new InvalidOperationException("Call Forward(x, cos, sin, …).");

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, int layer, bool causal)
    {
        long batch = x.shape[0], seq = x.shape[1];
        // HF layout: the fused output is [heads, 3, head_dim] per position, so view before splitting q, k, v.
        var qkv = _precision.Linear(query_key_value, x).view(batch, seq, _heads, 3 * _headDim).permute(0, 2, 1, 3);
        var q = Rotary.Apply(qkv[.., .., .., .._headDim], cos, sin, _rotaryDim);
        var k = Rotary.Apply(qkv[.., .., .., _headDim..(2 * _headDim)], cos, sin, _rotaryDim);
        var v = qkv[.., .., .., (2 * _headDim)..];
        if (cache != null)
        {
            (k, v) = cache.Append(layer, k, v);
            (k, v) = (k.to(q.dtype), v.to(q.dtype)); // the cache is float32; a bfloat16 compute type reads it in its own type
        }
        var attended = causal
            ? functional.scaled_dot_product_attention(q, k, v, is_casual: true)
            : functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        return _precision.Linear(dense, attended.transpose(1, 2).reshape(batch, seq, _heads * _headDim));
    }
}

/// <summary>The feed-forward block: up-projection, exact GELU, down-projection.</summary>
sealed class GptNeoXMlp : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    readonly Linear dense_h_to_4h;
    readonly Linear dense_4h_to_h;
#pragma warning restore IDE1006

    readonly ComputePrecision _precision;
    readonly bool _tanhGelu;

    public GptNeoXMlp(GptNeoXConfig c, ComputePrecision precision) : base("GPTNeoXMLP")
    {
        _precision = precision;
        _tanhGelu = c.HiddenAct != "gelu"; // gelu_new, gelu_fast and gelu_pytorch_tanh are the tanh approximation
        dense_h_to_4h = Linear(c.HiddenSize, c.IntermediateSize);
        dense_4h_to_h = Linear(c.IntermediateSize, c.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var up = _precision.Linear(dense_h_to_4h, x);
        return _precision.Linear(dense_4h_to_h, _tanhGelu ? functional.gelu(up, global::TorchSharp.Modules.GELU.Approximate.tanh) : functional.gelu(up));
    }
}

/// <summary>The compute type shared by a model's modules (see <see cref="GptNeoXForCausalLM.ComputeType"/>).</summary>
sealed class ComputePrecision
{
    public ScalarType? Type;
    public LoraAdapters? Lora;
    public bool Training;

    /// <summary>
    /// A linear layer in the compute type (input, weight and bias cast; autograd carries gradients back to the float32
    /// weights), plus its LoRA update when it has an adapter.
    /// </summary>
    public Tensor Linear(Linear layer, Tensor x)
    {
        var y = Type is { } t ? functional.linear(x.to(t), layer.weight!.to(t), layer.bias?.to(t)) : layer.forward(x);
        if (Lora == null || !Lora.Pairs.TryGetValue(layer, out var adapter)) return y;
        var input = Lora.Options.Dropout > 0 ? functional.dropout(x, Lora.Options.Dropout, Training) : x;
        var (a, b) = Type is { } u ? (adapter.A.to(u), adapter.B.to(u)) : ((Tensor)adapter.A, (Tensor)adapter.B);
        return y + functional.linear(functional.linear(input.to(a.dtype), a), b) * Lora.Scale;
    }
}

/// <summary>
/// Rotary position embedding as GPT-NeoX defines it: frequencies <c>base^(−2i/d)</c>, the angle table duplicated
/// over both halves, and <c>rotate_half</c> pairing dimension i with i + d/2. Not a module: it has no weights, so
/// no buffer reaches the state dict (HF checkpoints that carry <c>inv_freq</c> are accepted and the buffer ignored).
/// </summary>
public sealed class Rotary(int dim, double theta)
{
    // Computed once, not on every forward pass (each decoding step is one): θ^(2i/d) in float32, then its reciprocal, as HF
    // does. Tensor operations only: a temporary implicit Scalar here once crashed a run ("Unknown scalar type").
    readonly float[] _inverseFrequencies = InverseFrequencies(dim, theta);

    /// <summary>cos and sin tables <c>[seq, dim]</c> for positions 0..seq−1, computed in float32 exactly as HF does.</summary>
    public (Tensor Cos, Tensor Sin) Table(long seq, Device device)
    {
        var angles = outer(arange(seq, dtype: float32, device: device), InverseFrequencies(device));
        var both = cat([angles, angles], -1);
        return (both.cos(), both.sin());
    }

    /// <summary>cos and sin tables <c>[batch, 1, seq, dim]</c> for explicit positions <c>[batch, seq]</c> (padded or packed rows).</summary>
    public (Tensor Cos, Tensor Sin) Table(Tensor positionIds)
    {
        var angles = positionIds.to(float32).unsqueeze(-1) * InverseFrequencies(positionIds.device);
        var both = cat([angles, angles], -1).unsqueeze(1);
        return (both.cos(), both.sin());
    }

    Tensor InverseFrequencies(Device device) => tensor(_inverseFrequencies, device: device);

    static float[] InverseFrequencies(int dim, double theta)
    {
        float[] exponents = Enumerable.Range(0, (dim + 1) / 2).Select(i => 2 * i / (float)dim).ToArray();
        using var powers = pow(tensor((float)theta), tensor(exponents));
        using var inverse = powers.reciprocal();
        return inverse.data<float>().ToArray();
    }

    /// <summary>Rotates the first <paramref name="rotaryDim"/> dimensions of <paramref name="x"/> <c>[batch, heads, seq, head_dim]</c> (tables broadcast).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin, int rotaryDim)
    {
        if (rotaryDim == 0) return x;
        var rotated = x[.., .., .., ..rotaryDim];
        int half = rotaryDim / 2;
        var rotateHalf = cat([-rotated[.., .., .., half..], rotated[.., .., .., ..half]], -1);
        var result = rotated * cos.to(x.dtype) + rotateHalf * sin.to(x.dtype);
        return rotaryDim == x.shape[3] ? result : cat([result, x[.., .., .., rotaryDim..]], -1);
    }
}
