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

    /// <summary>The repository root (the folder with MLNetFinetune.sln above the working directory or the binaries).</summary>
    public static string RepositoryRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MLNetFinetune.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("Run the benchmarks inside the repository (no MLNetFinetune.sln above).");
    }

    public static int Int(string[] args, string name, int fallback) => Value(args, name) is { } v ? int.Parse(v) : fallback;

    /// <summary>--threads (default: all cores), applied to libtorch, and --device (default cpu).</summary>
    public static (int Threads, global::TorchSharp.torch.Device Device) Torch(string[] args)
    {
        int threads = Int(args, "--threads", Environment.ProcessorCount);
        MLNetFinetune.TorchSharp.TorchRuntime.SetThreads(threads);
        return (threads, MLNetFinetune.TorchSharp.TorchRuntime.ResolveDevice(Value(args, "--device") ?? "cpu"));
    }
}
