using System.Security.Cryptography;
using MLNetFinetune.Distributed;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>
/// What data parallelism adds to the training loop, PyTorch DDP's recipe on a <see cref="IProcessGroup"/>: identical
/// weights on every rank (broadcast from rank 0, then compared by hash), and gradients summed over the ranks in flat
/// buckets after backward, so every rank takes the same optimizer step.
/// </summary>
/// <remarks>
/// The reduction runs after backward rather than overlapped with it: TorchSharp 0.107 exposes no autograd hook that fires
/// when a parameter's gradient is ready. On a CPU the reduction shares the cores with compute anyway.
/// </remarks>
sealed class DataParallel(IProcessGroup group)
{
    /// <summary>Elements per all-reduce: 25 MiB of float32, DDP's default <c>bucket_cap_mb</c>.</summary>
    public const int BucketElements = 25 * 1024 * 1024 / sizeof(float);

    public IProcessGroup Group => group;

    public int Rank => group.Rank;

    public int WorldSize => group.WorldSize;

    /// <summary>Gives every rank rank 0's weights and checks that they now agree (a SHA-256 of every parameter's bytes).</summary>
    public void BroadcastWeights(nn.Module model)
    {
        using var _ = no_grad();
        var parameters = model.named_parameters().ToList();
        foreach (var (name, p) in parameters)
            WithHostBytes(p, bytes => group.Broadcast(bytes, p.numel() * p.element_size(), 0, $"the broadcast of weight {name}"));
        group.RequireSame(WeightDigest(parameters.Select(x => x.parameter)), "weights after the broadcast");
    }

    /// <summary>SHA-256 over the parameters' bytes in order.</summary>
    public static byte[] WeightDigest(IEnumerable<Tensor> parameters)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var p in parameters) WithHost(p, host => sha.AppendData(host.bytes), copyBack: false);
        return sha.GetHashAndReset();
    }

    readonly System.Diagnostics.Stopwatch _reducing = new();

    /// <summary>Time spent in <see cref="AllReduceGradients"/> so far (waiting for slower ranks included).</summary>
    public TimeSpan ReductionTime => _reducing.Elapsed;

    /// <summary>Sums the gradients over the ranks: the flat gradient in buckets, or each parameter's gradient in turn.</summary>
    public void AllReduceGradients(ITrainingOptimizer optimizer, IReadOnlyList<Parameter> parameters, int step)
    {
        _reducing.Start();
        try
        {
            Reduce(optimizer, parameters, step);
        }
        finally
        {
            _reducing.Stop();
        }
    }

    void Reduce(ITrainingOptimizer optimizer, IReadOnlyList<Parameter> parameters, int step)
    {
        using var _ = no_grad();
        if (optimizer.FlatGradients is { } flat)
        {
            long total = flat.numel();
            for (long start = 0, bucket = 0; start < total; start += BucketElements, bucket++)
            {
                using var slice = flat.narrow(0, start, Math.Min(BucketElements, total - start));
                AllReduce(slice, $"the all-reduce of gradient bucket {bucket} at step {step}");
            }
            return;
        }
        foreach (var p in parameters)
            if (p.grad is { } grad) AllReduce(grad, $"the all-reduce of a gradient at step {step}");
    }

    void AllReduce(Tensor tensor, string what)
    {
        if (tensor.dtype != ScalarType.Float32) throw new InvalidOperationException($"Gradients are reduced as float32; this one is {tensor.dtype}.");
        WithHostBytes(tensor, bytes => group.AllReduceSum(bytes, tensor.numel(), CollectiveType.Float32, what));
    }

    // MPI reduces host memory: a contiguous CPU tensor is handed over in place (TorchSharp's `bytes` is a view of its
    // storage), any other through a contiguous host copy that is copied back.
    static unsafe void WithHostBytes(Tensor tensor, Action<nint> use) => WithHost(tensor, host =>
    {
        fixed (byte* p = host.bytes) use((nint)p);
    }, copyBack: true);

    // The tensor itself when it is a contiguous CPU tensor, else a contiguous host copy (written back with copyBack).
    static void WithHost(Tensor tensor, Action<Tensor> use, bool copyBack)
    {
        if (tensor.device_type == DeviceType.CPU && tensor.is_contiguous()) { use(tensor); return; }
        using var host = tensor.detach().cpu().contiguous();
        use(host);
        if (copyBack) tensor.copy_(host);
    }
}
