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
}
