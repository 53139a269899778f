using TorchSharp;

namespace MLNetFinetune.TorchSharp;

/// <summary>Where and how libtorch computes: device choice and thread count, shared by every training stage.</summary>
public static class TorchRuntime
{
    /// <summary>
    /// Resolves a device name: <c>auto</c> picks CUDA when TorchSharp sees a GPU, else CPU; <c>cpu</c>, <c>cuda</c>
    /// and <c>cuda:N</c> are taken as given, and <c>cuda</c> without a usable GPU fails with the reason.
    /// </summary>
    public static torch.Device ResolveDevice(string name) => ChooseDevice(name).Device;

    /// <summary>
    /// Resolves a device name as <see cref="ResolveDevice"/> does and says why, for the line a verb prints:
    /// <c>cuda (auto: libtorch sees 1 CUDA GPU)</c>, <c>cpu (auto: libtorch sees no CUDA GPU; this build's backend is cpu)</c>, <c>cpu (asked for)</c>.
    /// </summary>
    public static (torch.Device Device, string Description) ChooseDevice(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        LibTorchLoader.EnsureLoaded();
        string n = name.Trim().ToLowerInvariant();
        if (n == "auto")
            return torch.cuda.is_available()
                ? (torch.CUDA, $"cuda (auto: libtorch sees {torch.cuda.device_count()} CUDA GPU{(torch.cuda.device_count() == 1 ? "" : "s")})")
                : (torch.CPU, $"cpu (auto: libtorch sees no CUDA GPU; this build's backend is {TorchBackend}{(LibTorchLoader.Status is { } status ? $": {status}" : "")})");
        return (Resolve(name, n), $"{n} (asked for)");
    }

    static torch.Device Resolve(string name, string n)
    {
        if (n == "cpu") return torch.CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            if (!torch.cuda.is_available())
                throw new InvalidOperationException(
                    $"Device '{name}' was requested but TorchSharp sees no CUDA GPU. This build uses the '{TorchBackend}' backend" +
                    (LibTorchLoader.Status is { } status ? $" ({status})" : "") +
                    "; build with -p:TorchBackend=cuda (TorchSharp-cuda-linux) or -p:TorchBackend=libtorch with " + LibTorchLoader.Variable +
                    " naming a CUDA libtorch, on a machine with an NVIDIA driver, or use device 'cpu'.");
            return new torch.Device(n);
        }
        throw new ArgumentException($"Unknown device '{name}': use auto, cpu, cuda or cuda:N.", nameof(name));
    }

    /// <summary>Sets libtorch's intra-op threads; 0 keeps libtorch's default (one per core).</summary>
    public static void SetThreads(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        LibTorchLoader.EnsureLoaded();
        if (threads > 0) torch.set_num_threads(threads);
    }

    /// <summary>The TorchSharp backend this assembly was built with (cpu, cuda or libtorch: the TorchBackend build property).</summary>
    public static string TorchBackend { get; } =
        typeof(TorchRuntime).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .Cast<System.Reflection.AssemblyMetadataAttribute>()
            .FirstOrDefault(a => a.Key == "TorchBackend")?.Value ?? "cpu";
}
