using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>Which AdamW steps the weights (both compute the same update; see <see cref="FlatAdamW"/>).</summary>
public enum AdamWKind
{
    /// <summary><see cref="Flat"/> on CUDA, <see cref="PerParameter"/> on CPU.</summary>
    Auto,

    /// <summary>TorchSharp's AdamW: a handful of kernels per parameter each step.</summary>
    PerParameter,

    /// <summary><see cref="FlatAdamW"/>: parameters, gradients and moments in flat buffers, a handful of kernels per group.</summary>
    Flat,
}

/// <summary>What the training loop asks of its optimizer, whichever kind it is.</summary>
interface ITrainingOptimizer : IDisposable
{
    IReadOnlyList<AdamW.ParamGroup> ParamGroups { get; }

    /// <summary>One buffer holding every parameter's gradient, when the optimizer keeps them flat (data parallelism reduces it in buckets).</summary>
    Tensor? FlatGradients { get; }

    /// <summary>Clips the global gradient norm to <paramref name="maxNorm"/> (∞: no clipping) and returns the norm before.</summary>
    double ClipGradNorm(double maxNorm);

    void step();

    void zero_grad();

    void save_state_dict(string path);

    void load_state_dict(string path);
}

static class TrainingOptimizer
{
    /// <summary>
    /// The optimizer <paramref name="kind"/> names, over <paramref name="groups"/>, for parameters on <paramref name="device"/>;
    /// the gradient norm sums over <paramref name="parameters"/> in their order (the groups' parameters, in the model's order).
    /// </summary>
    public static ITrainingOptimizer Create(AdamWKind kind, IReadOnlyList<Parameter> parameters, IReadOnlyList<AdamW.ParamGroup> groups, Device device, bool dataParallel) =>
        Resolve(kind, device, dataParallel) == AdamWKind.Flat ? new FlatAdamW(groups, parameters) : new PerParameterAdamW(parameters, groups);

    // CPU keeps the per-parameter optimizer by default: its runs (the quickstart's numbers) stay bit-identical to before.
    // Data parallelism takes the flat one, whose gradient is reduced in a few large buckets rather than one call per parameter.
    public static AdamWKind Resolve(AdamWKind kind, Device device, bool dataParallel) =>
        kind != AdamWKind.Auto ? kind : device.type == DeviceType.CUDA || dataParallel ? AdamWKind.Flat : AdamWKind.PerParameter;

    sealed class PerParameterAdamW(IReadOnlyList<Parameter> parameters, IReadOnlyList<AdamW.ParamGroup> groups) : ITrainingOptimizer
    {
        readonly AdamW _adamw = optim.AdamW(groups);

        public IReadOnlyList<AdamW.ParamGroup> ParamGroups => groups;

        public Tensor? FlatGradients => null;

        public double ClipGradNorm(double maxNorm) => nn.utils.clip_grad_norm_(parameters, maxNorm);

        public void step() => _adamw.step();

        public void zero_grad() => _adamw.zero_grad();

        public void save_state_dict(string path) => _adamw.save_state_dict(path);

        public void load_state_dict(string path) => _adamw.load_state_dict(path);

        public void Dispose() => _adamw.Dispose();
    }
}
