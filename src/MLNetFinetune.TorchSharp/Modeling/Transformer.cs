using MLNetFinetune.ModelFiles;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>
/// The decoder of both families, driven by one <see cref="ModelConfig"/>: GPT-NeoX (Pythia: fused QKV, LayerNorm, GELU
/// MLP, partial rotary, parallel residual) and the Llama family (Llama 2/3, SmolLM2, TinyLlama, Qwen2: separate q/k/v/o
/// with grouped-query attention, RMSNorm, SwiGLU MLP, full rotary with optional scaling, tied embeddings). Modules are
/// registered under Hugging Face's names for the family (<c>gpt_neox.layers.0.attention.query_key_value.weight</c>,
/// <c>model.layers.0.self_attn.q_proj.weight</c>, …), so a published folder loads and saves without renaming.
/// </summary>
public sealed class TransformerForCausalLM : Module<Tensor, Tensor>
{
    // Registered under the family's HF names. Kept in a tuple, not in module fields, because TorchSharp also registers
    // every module field under the field's own name.
    readonly (TransformerBackbone Backbone, Linear? Head) _modules; // Head is null when tied to the input embedding
    readonly ComputePrecision _precision = new();
    LoraAdapters? _lora; // beside the layers: they are run through RunLinear, which adds an adapter's update where there is one
    TransformerBackbone Backbone => _modules.Backbone;
    Linear? Head => _modules.Head;

    /// <summary>A model of the given shape with freshly initialised weights (normal, std = initializer_range; zero biases; unit norms).</summary>
    public TransformerForCausalLM(ModelConfig config) : base(config.Architectures?.FirstOrDefault() ?? config.ModelType)
    {
        Config = config.Validated("the model config");
        _modules = (new TransformerBackbone(config, RunLinear), config.TieWordEmbeddings ? null : Linear(config.HiddenSize, config.VocabSize, hasBias: false));
        register_module(config.IsGptNeoX ? "gpt_neox" : "model", Backbone);
        if (Head != null) register_module(config.IsGptNeoX ? "embed_out" : "lm_head", Head);
        using var _ = no_grad();
        foreach (var (name, p) in named_parameters())
        {
            if (name.EndsWith(".bias", StringComparison.Ordinal)) init.zeros_(p);
            else if (name.Contains("norm", StringComparison.Ordinal)) init.ones_(p);
            else init.normal_(p, 0, config.InitializerRange);
        }
    }

    /// <summary>The shape.</summary>
    public ModelConfig Config { get; }

    /// <summary>The HF name of the output head's weight (the input embedding's when tied).</summary>
    public string HeadWeightName => Config.TieWordEmbeddings ? (Config.IsGptNeoX ? "gpt_neox.embed_in.weight" : "model.embed_tokens.weight")
        : Config.IsGptNeoX ? "embed_out.weight" : "lm_head.weight";

    /// <summary>
    /// Mixed precision: when set (bfloat16 on CUDA), every matrix product runs in this type on a cast of the float32
    /// weights, while embeddings, norms, the residual stream, the loss and the weights themselves stay float32,
    /// as PyTorch's autocast does (TorchSharp has no autocast). Null (default) computes in float32.
    /// </summary>
    public ScalarType? ComputeType
    {
        get => _precision.Type;
        set => _precision.Type = value;
    }

    /// <summary>The LoRA adapters in use, or null.</summary>
    public LoraAdapters? Lora => _lora;

    /// <summary>
    /// Adds LoRA adapters to the targeted layers (<see cref="LoraOptions.TargetModules"/>: HF names such as
    /// <c>q_proj</c>, or <c>all-linear</c>) and freezes every base weight: training then updates only the adapters.
    /// </summary>
    public LoraAdapters AttachLora(LoraOptions options)
    {
        options.Validate();
        if (_lora != null) throw new InvalidOperationException("The model already has LoRA adapters; merge or detach them first.");
        // The layers LoRA can target, by full and HF short name: every linear layer but the output head, as PEFT's all-linear.
        var linear = named_modules().Where(m => m.module is Linear && !ReferenceEquals(m.module, Head))
            .Select(m => (m.name, Short: m.name.Split('.')[^1], Layer: (Linear)m.module)).ToList();
        var known = linear.Select(l => l.Short).Distinct().ToList();
        var targets = options.TargetModules.SequenceEqual([LoraOptions.AllLinear]) ? known : options.TargetModules;
        var unknown = targets.Except(known).ToList();
        if (unknown.Count > 0)
            throw new ArgumentException($"LoRA target modules must be among {string.Join(", ", known)} or {LoraOptions.AllLinear} for a {Config.ModelType} model (got {string.Join(", ", options.TargetModules)}).");
        var layers = linear.Where(l => targets.Contains(l.Short)).Select(l => (l.name, l.Layer)).ToList();
        foreach (var p in parameters()) p.requires_grad = false;
        _lora = new LoraAdapters(options with { TargetModules = targets.ToList() }, layers, parameters().First().device);
        return _lora;
    }

    /// <summary>Folds the adapters into the weights (W ← W + (alpha/r)·B·A), removes them and unfreezes the model: a plain model again.</summary>
    public void MergeLora()
    {
        var lora = _lora ?? throw new InvalidOperationException("The model has no LoRA adapters to merge.");
        using (no_grad())
        {
            foreach (var (layer, (_, a, b)) in lora.Pairs)
                layer.weight!.add_(b.matmul(a), alpha: lora.Scale);
        }
        _lora = null;
        lora.Dispose();
        foreach (var p in parameters()) p.requires_grad = true;
    }

    /// <summary>What the optimizer updates: the adapters when LoRA is attached, else every weight.</summary>
    public IEnumerable<Parameter> TrainableParameters() => _lora?.Parameters() ?? parameters();

    // How every linear layer of the model runs: in the compute type, plus its LoRA update when it has an adapter.
    Tensor RunLinear(Linear layer, Tensor x)
    {
        var y = _precision.Linear(layer, x);
        return _lora is { } lora ? lora.Apply(layer, x, y, training, _precision.Type) : y;
    }

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
        using var hidden = Backbone.Forward(inputIds, positionIds, attentionMask, cache);
        var logits = Head is null ? _precision.Project(hidden, Backbone.EmbeddingWeight) : RunLinear(Head, hidden);
        return logits.dtype == float32 ? logits : logits.to(float32);
    }

    /// <summary>A cache for <paramref name="batch"/> rows of up to <paramref name="capacity"/> tokens, on the model's device (key/value heads only).</summary>
    public KeyValueCache NewCache(long batch, long capacity) =>
        new(Config.NumHiddenLayers, batch, Config.KeyValueHeads, capacity, Config.HeadDim, parameters().First().device);

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
        var targets = cat([labels[.., 1..], full(labels.shape[0], 1, Scalars.IgnoreIndex, dtype: labels.dtype, device: labels.device)], 1);
        return functional.cross_entropy(logits.view(-1, logits.shape[2]), targets.view(-1), ignore_index: -100, reduction: reduction)
            .MoveToOuterDisposeScope();
    }
}

/// <summary><c>gpt_neox</c> / <c>model</c>: token embedding, the layers, the final norm.</summary>
sealed class TransformerBackbone : Module<Tensor, Tensor>
{
    // A tuple, not module fields, so that only the HF names are registered (see TransformerForCausalLM).
    readonly (Embedding Embedding, ModuleList<TransformerLayer> Layers, Module<Tensor, Tensor> FinalNorm) _modules;
    readonly Rotary _rotary;

    public TransformerBackbone(ModelConfig c, LinearProjection linear) : base("Backbone")
    {
        _modules = (Embedding(c.VocabSize, c.HiddenSize),
            new ModuleList<TransformerLayer>(Enumerable.Range(0, c.NumHiddenLayers).Select(_ => new TransformerLayer(c, linear)).ToArray()),
            Norms.Create(c));
        _rotary = new Rotary(c.RotaryDim, c.RotaryBase, c.IsGptNeoX ? null : c.RopeScaling);
        register_module(c.IsGptNeoX ? "embed_in" : "embed_tokens", _modules.Embedding);
        register_module("layers", _modules.Layers);
        register_module(c.IsGptNeoX ? "final_layer_norm" : "norm", _modules.FinalNorm);
    }

    /// <summary>The input embedding, which a tied output head reuses.</summary>
    public Tensor EmbeddingWeight => _modules.Embedding.weight!;

    public override Tensor forward(Tensor inputIds) => Forward(inputIds, null, null, null);

    public Tensor Forward(Tensor inputIds, Tensor? positionIds, Tensor? mask, KeyValueCache? cache)
    {
        using var scope = NewDisposeScope();
        long seq = inputIds.shape[1], past = cache?.Length ?? 0;
        if (positionIds is null && past > 0) positionIds = arange(past, past + seq, dtype: int64, device: inputIds.device).unsqueeze(0);
        // Plain causal attention from position 0 (training) keeps SDPA's causal kernel and the [seq, dim] rotary table.
        var (cos, sin) = positionIds is null ? _rotary.Table(seq, inputIds.device) : _rotary.Table(positionIds);
        if (mask is null && past > 0 && seq > 1) mask = AttentionMasks.Causal(seq, past, inputIds.device);
        var (embedding, layers, finalNorm) = _modules;
        Tensor x = embedding.forward(inputIds);
        for (int i = 0; i < layers.Count; i++) x = layers[i].Forward(x, cos, sin, mask, cache, i, causal: mask is null && past == 0);
        cache?.Advance(seq);
        return finalNorm.forward(x).MoveToOuterDisposeScope();
    }
}

/// <summary>One layer: attention then MLP, each after its norm; GPT-NeoX may run both on the same input (parallel residual).</summary>
sealed class TransformerLayer : Module<Tensor, Tensor>
{
    // A tuple, not module fields, so that only the HF names are registered (see TransformerForCausalLM).
    readonly (Module<Tensor, Tensor> InputNorm, Module<Tensor, Tensor> PostAttentionNorm, Attention Attention, Module<Tensor, Tensor> Mlp) _modules;
    readonly bool _parallel;

    public TransformerLayer(ModelConfig c, LinearProjection linear) : base("Layer")
    {
        _modules = (Norms.Create(c), Norms.Create(c),
            c.IsGptNeoX ? new FusedQkvAttention(c, linear) : new GroupedQueryAttention(c, linear),
            c.IsGptNeoX ? new GeluMlp(c, linear) : new GatedMlp(c, linear));
        _parallel = c.IsGptNeoX && c.UseParallelResidual;
        register_module("input_layernorm", _modules.InputNorm);
        register_module("post_attention_layernorm", _modules.PostAttentionNorm);
        register_module(c.IsGptNeoX ? "attention" : "self_attn", _modules.Attention);
        register_module("mlp", _modules.Mlp);
    }

    public override Tensor forward(Tensor x) => throw new InvalidOperationException("Call Forward(x, cos, sin, …).");

    public Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, int index, bool causal)
    {
        var (inputNorm, postAttentionNorm, attention, mlp) = _modules;
        var attended = attention.Forward(inputNorm.forward(x), cos, sin, mask, cache, index, causal);
        if (_parallel) return Scalars.Add(Scalars.Add(x, attended), mlp.forward(postAttentionNorm.forward(x)));
        var h = Scalars.Add(x, attended);
        return Scalars.Add(h, mlp.forward(postAttentionNorm.forward(h)));
    }
}

/// <summary>Causal self-attention with rotary position embedding; the subclasses differ in how they project q, k and v.</summary>
abstract class Attention(string name, ModelConfig c, LinearProjection linear) : Module<Tensor, Tensor>(name)
{
    protected readonly int Heads = c.NumAttentionHeads, KeyValueHeads = c.KeyValueHeads, HeadDim = c.HeadDim, RotaryDim = c.RotaryDim;
    protected readonly LinearProjection Project = linear;

    public override Tensor forward(Tensor x) => throw new InvalidOperationException("Call Forward(x, cos, sin, …).");

    public abstract Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, int layer, bool causal);

    /// <summary>Rotates q and k, extends the cache, attends; q is <c>[batch, heads, seq, dim]</c>, k and v have the key/value heads. Returns <c>[batch, seq, heads × dim]</c>.</summary>
    protected Tensor Attend(Tensor q, Tensor k, Tensor v, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, int layer, bool causal)
    {
        long batch = q.shape[0], seq = q.shape[2];
        q = Rotary.Apply(q, cos, sin, RotaryDim);
        k = Rotary.Apply(k, cos, sin, RotaryDim);
        if (cache != null)
        {
            (k, v) = cache.Append(layer, k, v);
            (k, v) = (k.to(q.dtype), v.to(q.dtype)); // the cache is float32; a bfloat16 compute type reads it in its own type
        }
        if (KeyValueHeads != Heads)
        {
            // Grouped-query attention: query head h reads key/value head h / (heads / kv heads), as HF's repeat_kv does.
            (k, v) = (k.repeat_interleave(Heads / KeyValueHeads, dim: 1), v.repeat_interleave(Heads / KeyValueHeads, dim: 1));
        }
        var attended = causal
            ? functional.scaled_dot_product_attention(q, k, v, is_casual: true)
            : functional.scaled_dot_product_attention(q, k, v, attn_mask: mask);
        return attended.transpose(1, 2).reshape(batch, seq, Heads * HeadDim);
    }
}

/// <summary>GPT-NeoX: one fused projection whose output is <c>[heads, 3, head_dim]</c> per position (HF's interleaved layout), and <c>dense</c>.</summary>
sealed class FusedQkvAttention : Attention
{
#pragma warning disable IDE1006 // HF parameter names
    readonly Linear query_key_value;
    readonly Linear dense;
#pragma warning restore IDE1006

    public FusedQkvAttention(ModelConfig c, LinearProjection linear) : base("GPTNeoXAttention", c, linear)
    {
        query_key_value = Linear(c.HiddenSize, 3 * c.HiddenSize, hasBias: c.QkvBias);
        dense = Linear(c.HiddenSize, c.HiddenSize, hasBias: c.OutputBias);
        RegisterComponents();
    }

    public override Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, int layer, bool causal)
    {
        long batch = x.shape[0], seq = x.shape[1];
        var qkv = Project(query_key_value, x).view(batch, seq, Heads, 3 * HeadDim).permute(0, 2, 1, 3);
        var attended = Attend(qkv[.., .., .., ..HeadDim], qkv[.., .., .., HeadDim..(2 * HeadDim)], qkv[.., .., .., (2 * HeadDim)..], cos, sin, mask, cache, layer, causal);
        return Project(dense, attended);
    }
}

/// <summary>The Llama family: separate q/k/v/o projections, with fewer key/value heads than query heads (grouped-query) or one (multi-query).</summary>
sealed class GroupedQueryAttention : Attention
{
#pragma warning disable IDE1006 // HF parameter names
    readonly Linear q_proj, k_proj, v_proj, o_proj;
#pragma warning restore IDE1006

    public GroupedQueryAttention(ModelConfig c, LinearProjection linear) : base("LlamaAttention", c, linear)
    {
        q_proj = Linear(c.HiddenSize, c.NumAttentionHeads * c.HeadDim, hasBias: c.QkvBias);
        k_proj = Linear(c.HiddenSize, c.KeyValueHeads * c.HeadDim, hasBias: c.QkvBias);
        v_proj = Linear(c.HiddenSize, c.KeyValueHeads * c.HeadDim, hasBias: c.QkvBias);
        o_proj = Linear(c.NumAttentionHeads * c.HeadDim, c.HiddenSize, hasBias: c.OutputBias);
        RegisterComponents();
    }

    public override Tensor Forward(Tensor x, Tensor cos, Tensor sin, Tensor? mask, KeyValueCache? cache, int layer, bool causal)
    {
        long batch = x.shape[0], seq = x.shape[1];
        Tensor Split(Linear projection, int heads) => Project(projection, x).view(batch, seq, heads, HeadDim).transpose(1, 2);
        var attended = Attend(Split(q_proj, Heads), Split(k_proj, KeyValueHeads), Split(v_proj, KeyValueHeads), cos, sin, mask, cache, layer, causal);
        return Project(o_proj, attended);
    }
}

/// <summary>GPT-NeoX's feed-forward block: up-projection, GELU (exact or tanh), down-projection.</summary>
sealed class GeluMlp : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    readonly Linear dense_h_to_4h;
    readonly Linear dense_4h_to_h;
#pragma warning restore IDE1006

    readonly LinearProjection _linear;
    readonly bool _tanhGelu;

    public GeluMlp(ModelConfig c, LinearProjection linear) : base("GPTNeoXMLP")
    {
        _linear = linear;
        _tanhGelu = c.HiddenAct != "gelu"; // gelu_new, gelu_fast and gelu_pytorch_tanh are the tanh approximation
        dense_h_to_4h = Linear(c.HiddenSize, c.IntermediateSize);
        dense_4h_to_h = Linear(c.IntermediateSize, c.HiddenSize);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        var up = _linear(dense_h_to_4h, x);
        return _linear(dense_4h_to_h, _tanhGelu ? functional.gelu(up, global::TorchSharp.Modules.GELU.Approximate.tanh) : functional.gelu(up));
    }
}

/// <summary>The Llama family's SwiGLU block: <c>down(silu(gate(x)) · up(x))</c>.</summary>
sealed class GatedMlp : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    readonly Linear gate_proj, up_proj, down_proj;
#pragma warning restore IDE1006

    readonly LinearProjection _linear;

    public GatedMlp(ModelConfig c, LinearProjection linear) : base("LlamaMLP")
    {
        _linear = linear;
        gate_proj = Linear(c.HiddenSize, c.IntermediateSize, hasBias: c.MlpBias);
        up_proj = Linear(c.HiddenSize, c.IntermediateSize, hasBias: c.MlpBias);
        down_proj = Linear(c.IntermediateSize, c.HiddenSize, hasBias: c.MlpBias);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x) =>
        _linear(down_proj, functional.silu(_linear(gate_proj, x)) * _linear(up_proj, x));
}

/// <summary>The family's norm: LayerNorm (GPT-NeoX) or RMSNorm (Llama family).</summary>
static class Norms
{
    public static Module<Tensor, Tensor> Create(ModelConfig c) => c.IsGptNeoX ? LayerNorm(c.HiddenSize, c.LayerNormEps) : new RmsNorm(c.HiddenSize, c.RmsNormEps);
}

/// <summary>RMSNorm as HF's LlamaRMSNorm: statistics in float32, the result cast back to the input's type, then scaled by the weight.</summary>
sealed class RmsNorm : Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    readonly Parameter weight;
#pragma warning restore IDE1006
    // Held for the module's life: a temporary implicit Scalar on this hot path could be collected while libtorch reads it.
    readonly Scalar _epsilon;

    public RmsNorm(long dim, double epsilon) : base("RMSNorm")
    {
        weight = new Parameter(ones(dim));
        _epsilon = epsilon.ToScalar();
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var x32 = x.to(float32);
        var normed = x32 * x32.square().mean([-1], keepdim: true).add(_epsilon).rsqrt();
        return (weight * normed.to(x.dtype)).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// Scalars the hot paths pass to libtorch, held for the process's life. A Scalar made on the fly (the alpha of every
/// Tensor + Tensor, a double factor) can be finalized while libtorch still reads it; that crashed a CI run in
/// Scalar::toFloat ("Expected false to be true") and an earlier one with "Unknown scalar type".
/// </summary>
static class Scalars
{
    public static readonly Scalar One = 1.ToScalar();
    public static readonly Scalar IgnoreIndex = (-100L).ToScalar();

    /// <summary><c>a + b</c> without a temporary Scalar.</summary>
    public static Tensor Add(Tensor a, Tensor b) => a.add(b, One);
}

/// <summary>How the model runs one of its linear layers (the model's: compute type, then LoRA where attached).</summary>
delegate Tensor LinearProjection(Linear layer, Tensor x);

/// <summary>The compute type of a model's matrix products (see <see cref="TransformerForCausalLM.ComputeType"/>).</summary>
sealed class ComputePrecision
{
    public ScalarType? Type;

    /// <summary>A linear layer in the compute type (input, weight and bias cast; autograd carries gradients back to the float32 weights).</summary>
    public Tensor Linear(Linear layer, Tensor x) =>
        Type is { } t ? functional.linear(x.to(t), layer.weight!.to(t), layer.bias?.to(t)) : layer.forward(x);

    /// <summary><c>x · Wᵀ</c> in the compute type for a weight that is not a layer's own (a tied output head).</summary>
    public Tensor Project(Tensor x, Tensor weight) => Type is { } t ? functional.linear(x.to(t), weight.to(t)) : functional.linear(x, weight);
}

/// <summary>
/// Rotary position embedding as GPT-NeoX and Llama define it: frequencies <c>base^(−2i/d)</c> (optionally rescaled,
/// <see cref="RopeScaling"/>), the angle table duplicated over both halves, and <c>rotate_half</c> pairing dimension i
/// with i + d/2. Not a module: it has no weights, so no buffer reaches the state dict (HF checkpoints that carry
/// <c>inv_freq</c> are accepted and the buffer ignored).
/// </summary>
public sealed class Rotary(int dim, double theta, RopeScaling? scaling = null)
{
    // Computed once, not on every forward pass (each decoding step is one), by the function the ONNX export bakes in.
    readonly float[] _inverseFrequencies = RotaryFrequencies.Inverse(dim, theta, scaling);

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

    /// <summary>Rotates the first <paramref name="rotaryDim"/> dimensions of <paramref name="x"/> <c>[batch, heads, seq, head_dim]</c> (tables broadcast).</summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin, int rotaryDim)
    {
        if (rotaryDim == 0) return x;
        var rotated = x[.., .., .., ..rotaryDim];
        int half = rotaryDim / 2;
        var rotateHalf = cat([-rotated[.., .., .., half..], rotated[.., .., .., ..half]], -1);
        var result = Scalars.Add(rotated * cos.to(x.dtype), rotateHalf * sin.to(x.dtype));
        return rotaryDim == x.shape[3] ? result : cat([result, x[.., .., .., rotaryDim..]], -1);
    }
}
