using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>
/// AdamW over flat buffers: the parameters, their gradients and both moments each live in one contiguous float32
/// buffer, and a step is a handful of kernels per parameter group instead of a handful per parameter (on a GPU the
/// per-parameter loop costs more in launches than in arithmetic for small models).
/// </summary>
/// <remarks>
/// <para>Building it moves every parameter's data into the flat buffer (the parameter becomes a view of it, so the model,
/// <c>parameters()</c>, <c>state_dict()</c> and saving work unchanged) and installs a view of the flat gradient as each
/// parameter's <c>.grad</c>, so backward accumulates straight into it. Move the model to its device first: <c>.to()</c>
/// after building gives the parameters new storage, cut loose from the buffers.</para>
/// <para>The math is TorchSharp's <c>AdamW.step</c> op for op (which is PyTorch's <c>_single_tensor_adamw</c> with
/// <c>mul_</c>/<c>add_</c> in place of <c>lerp_</c>); elementwise kernels give each element the same result whether
/// they run over one tensor or the flat buffer. Only the gradient norm is taken per parameter (see
/// <see cref="ClipGradNorm"/>); the clipping multiply is one.</para>
/// <para>TorchSharp's own <see cref="AdamW"/>, built over the same groups, keeps the groups' hyperparameters and the
/// per-parameter state records, whose moment tensors are views of the flat moments: saving and loading go through it,
/// so a checkpoint is byte for byte the per-parameter optimizer's <c>optimizer.bin</c>, and a run resumes with either
/// optimizer from either's checkpoint. It is never stepped. (Its constructor allocates per-parameter zero moments
/// that are swapped for the views at once: building needs a second set of moments' memory for a moment.)</para>
/// </remarks>
public sealed class FlatAdamW : ITrainingOptimizer
{
    // One segment per group: slices of the four flat buffers, covering the group's parameters in order.
    sealed record Segment(AdamW.ParamGroup Group, Tensor Params, Tensor Grads, Tensor ExpAvg, Tensor ExpAvgSq, AdamW.State[] States);

    readonly Tensor _params, _grads, _expAvg, _expAvgSq;
    readonly Tensor[] _gradViews; // each parameter's .grad, for the gradient norm
    readonly Segment[] _segments;
    readonly AdamW _records;

    /// <summary>
    /// Builds the optimizer over <paramref name="groups"/> (TorchSharp's AdamW groups: learning rate, betas, ε and weight
    /// decay per group; no amsgrad, no maximize). The parameters must be float32, on one device, in no group twice.
    /// <paramref name="clipOrder"/> is the order the per-parameter <c>clip_grad_norm_</c> would take the same parameters in
    /// (the model's, usually; default: group order): the norm sums in that order, so the two agree bit for bit.
    /// </summary>
    public FlatAdamW(IEnumerable<AdamW.ParamGroup> groups, IEnumerable<Parameter>? clipOrder = null)
    {
        var list = groups.Select(g => (Group: g, Parameters: g.Parameters.ToList())).ToList();
        var all = list.SelectMany(g => g.Parameters).ToList();
        if (all.Count == 0) throw new ArgumentException("FlatAdamW needs at least one parameter.", nameof(groups));
        if (all.Select(p => p.Handle).Distinct().Count() != all.Count)
            throw new ArgumentException("A parameter appears twice in FlatAdamW's groups.", nameof(groups));
        var device = all[0].device;
        if (all.FirstOrDefault(p => p.dtype != ScalarType.Float32 || p.device_type != device.type || p.device_index != device.index) is { } odd)
            throw new ArgumentException($"FlatAdamW keeps one float32 buffer on one device: a parameter is {odd.dtype} on {odd.device}, the first is {all[0].dtype} on {device}.", nameof(groups));
        foreach (var (group, _) in list)
            if (group.Options is AdamW.Options { amsgrad: true } or AdamW.Options { maximize: true })
                throw new ArgumentException("FlatAdamW implements plain AdamW: no amsgrad, no maximize.", nameof(groups));

        long total = all.Sum(p => p.numel());
        _params = zeros(total, ScalarType.Float32, device);
        _grads = zeros(total, ScalarType.Float32, device);
        _expAvg = zeros(total, ScalarType.Float32, device);
        _expAvgSq = zeros(total, ScalarType.Float32, device);
        var gradViews = new Dictionary<IntPtr, Tensor>();
        using (no_grad())
        {
            long offset = 0;
            foreach (var p in all)
            {
                long n = p.numel();
                using var data = _params.narrow(0, offset, n).view(p.shape);
                data.copy_(p);
                p.set_(data); // the parameter now shares the flat storage: same object, same shape, new home
                var grad = gradViews[p.Handle] = _grads.narrow(0, offset, n).view(p.shape);
                p.grad = grad; // backward adds into a gradient that is already there, so it lands in the flat buffer
                offset += n;
            }
        }

        var order = clipOrder?.ToList() ?? all;
        if (order.Count != all.Count || order.Any(p => !gradViews.ContainsKey(p.Handle)))
            throw new ArgumentException("The clipping order must list the groups' parameters, each once.", nameof(clipOrder));
        _gradViews = order.Select(p => gradViews[p.Handle]).ToArray();

        // The records' constructor fills each state with fresh zeros; they are swapped for views of the flat moments.
        _records = optim.AdamW(list.Select(g => g.Group));
        var states = _records.state_dict().State.Cast<AdamW.State>().ToArray();
        _segments = new Segment[list.Count];
        long start = 0, index = 0;
        for (int i = 0; i < list.Count; i++)
        {
            long length = 0;
            var groupStates = new AdamW.State[list[i].Parameters.Count];
            for (int j = 0; j < groupStates.Length; j++)
            {
                var (p, state) = (list[i].Parameters[j], states[index++]);
                long n = p.numel();
                state.exp_avg.Dispose();
                state.exp_avg_sq.Dispose();
                state.exp_avg = _expAvg.narrow(0, start + length, n).view(p.shape);
                state.exp_avg_sq = _expAvgSq.narrow(0, start + length, n).view(p.shape);
                groupStates[j] = state;
                length += n;
            }
            _segments[i] = new Segment(list[i].Group, _params.narrow(0, start, length), _grads.narrow(0, start, length),
                _expAvg.narrow(0, start, length), _expAvgSq.narrow(0, start, length), groupStates);
            start += length;
        }
    }

    /// <summary>The parameter groups; set a group's <c>LearningRate</c> to schedule it, as with TorchSharp's optimizers.</summary>
    public IReadOnlyList<AdamW.ParamGroup> ParamGroups => _segments.Select(s => s.Group).ToList();

    /// <summary>The flat gradient: every parameter's <c>.grad</c> is a view of it, in group order.</summary>
    public Tensor FlatGradients => _grads;

    /// <summary>Parameters updated, over all groups.</summary>
    public long ParameterCount => _params.numel();

    /// <summary>
    /// Scales the gradient so its global L2 norm is at most <paramref name="maxNorm"/> (∞: only measures it) and returns
    /// the norm before clipping, bit for bit as libtorch's <c>clip_grad_norm_</c> does: the norm of the per-parameter
    /// norms, a coefficient computed on the device and clamped to 1, always applied (here in one multiply).
    /// </summary>
    /// <remarks>
    /// One norm over the whole flat gradient would save the per-parameter reductions, but it rounds differently (as does
    /// summing the per-parameter norms in another order), and a last-bit difference in the norm is not harmless: gradients that are sums with heavy cancellation (the attention's
    /// query/key/value biases) come out different, Adam scales them to full-size steps, and after 20 steps at lr 1e-2 the
    /// tiny model's qkv biases were 7e-5 apart from the per-parameter optimizer's (every other weight within 2.4e-7).
    /// Matching the per-parameter norm keeps the two optimizers bit-identical.
    /// </remarks>
    public double ClipGradNorm(double maxNorm)
    {
        using var _ = no_grad();
        using var scope = NewDisposeScope();
        using var epsilon = 1e-6.ToScalar();
        using var one = 1.ToScalar();
        using var max = maxNorm.ToScalar();
        var norm = _gradViews.Length == 1 ? _gradViews[0].norm() : stack(_gradViews.Select(g => g.norm())).norm();
        var coefficient = full_like(norm, max).div_(norm.add(epsilon)).clamp_max_(one);
        _grads.mul_(coefficient);
        return norm.item<float>();
    }

    /// <summary>Zeroes the flat gradient (every parameter's <c>.grad</c> with it).</summary>
    public void zero_grad() => _grads.zero_();

    /// <summary>One AdamW step for every group, with each group's current learning rate and hyperparameters.</summary>
    public void step()
    {
        using var _ = no_grad();
        foreach (var s in _segments)
        {
            var o = (AdamW.Options)s.Group.Options;
            double lr = o.LearningRate!.Value, beta1 = o.beta1!.Value, beta2 = o.beta2!.Value, eps = o.eps!.Value, decay = o.weight_decay!.Value;
            long step = GroupStep(s) + 1;
            foreach (var state in s.States) state.step = step; // what a checkpoint saves; the per-parameter records count alike

            double biasCorrection1 = 1 - Math.Pow(beta1, step), biasCorrection2 = 1 - Math.Pow(beta2, step);
            // Scalars held by `using`: a temporary Scalar waits for the finalizer (see Scalars in Transformer.cs).
            using var keep = (1 - lr * decay).ToScalar();
            using var b1 = beta1.ToScalar();
            using var oneMinusB1 = (1 - beta1).ToScalar();
            using var b2 = beta2.ToScalar();
            using var oneMinusB2 = (1 - beta2).ToScalar();
            using var sqrtBiasCorrection2 = Math.Sqrt(biasCorrection2).ToScalar();
            using var epsilon = eps.ToScalar();
            using var stepSize = (-lr / biasCorrection1).ToScalar();
            // TorchSharp multiplies by 1 - lr·0 = 1 for a group without decay: skipping it changes no bit.
            if (decay != 0) s.Params.mul_(keep);
            s.ExpAvg.mul_(b1).add_(s.Grads, alpha: oneMinusB1);
            s.ExpAvgSq.mul_(b2).addcmul_(s.Grads, s.Grads, value: oneMinusB2);
            using var denom = s.ExpAvgSq.sqrt();
            denom.div_(sqrtBiasCorrection2).add_(epsilon);
            s.Params.addcdiv_(s.ExpAvg, denom, value: stepSize);
        }
    }

    // A group's parameters move together, so they share one step count; a loaded checkpoint must say so too.
    static long GroupStep(Segment s)
    {
        long step = s.States[0].step;
        if (s.States.Any(state => state.step != step))
            throw new InvalidOperationException($"The optimizer state has parameters of one group at different steps ({string.Join(", ", s.States.Select(x => x.step).Distinct())}): " +
                "it was saved by a per-parameter AdamW that skipped parameters without gradients. Resume it with the per-parameter optimizer.");
        return step;
    }

    /// <summary>Writes the state in TorchSharp's AdamW format (what the per-parameter optimizer writes).</summary>
    public void save_state_dict(string path) => _records.save_state_dict(path);

    /// <summary>Reads a state written by <see cref="save_state_dict"/> or by TorchSharp's AdamW over the same groups.</summary>
    public void load_state_dict(string path)
    {
        _records.load_state_dict(path); // reads each moment in place, into the views of the flat buffers
        foreach (var s in _segments) GroupStep(s);
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _records.Dispose();
        foreach (var g in _gradViews) g.Dispose();
        foreach (var s in _segments)
        {
            s.Params.Dispose();
            s.Grads.Dispose();
            s.ExpAvg.Dispose();
            s.ExpAvgSq.Dispose();
        }
        // The parameters and their .grad keep their views, and so the storage, alive; the moments go.
        _params.Dispose();
        _grads.Dispose();
        _expAvg.Dispose();
        _expAvgSq.Dispose();
    }
}
