namespace MLNetFinetune.Benchmarks;

/// <summary>The few command-line options the benchmarks take: <c>--name value</c> pairs and flags.</summary>
static class BenchmarkArgs
{
    public static string? Value(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    public static string TempDir(string[] args) => Value(args, "--dir") ?? Path.Combine(Path.GetTempPath(), "mlnetft-bench");

    public static int Int(string[] args, string name, int fallback) => Value(args, name) is { } v ? int.Parse(v) : fallback;

    /// <summary>--threads (default: all cores), applied to libtorch, and --device (default cpu).</summary>
    public static (int Threads, global::TorchSharp.torch.Device Device) Torch(string[] args)
    {
        int threads = Int(args, "--threads", Environment.ProcessorCount);
        MLNetFinetune.TorchSharp.TorchRuntime.SetThreads(threads);
        return (threads, MLNetFinetune.TorchSharp.TorchRuntime.ResolveDevice(Value(args, "--device") ?? "cpu"));
    }
}
