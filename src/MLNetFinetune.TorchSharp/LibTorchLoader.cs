using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace MLNetFinetune.TorchSharp;

/// <summary>
/// The <c>libtorch</c> backend (<c>dotnet build -p:TorchBackend=libtorch</c>): TorchSharp's managed and native layer
/// run on an installed libtorch named by <c>MLNETFT_LIBTORCH</c>, e.g. PyTorch's CUDA build
/// (<c>python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"</c>), where no
/// feed serves TorchSharp-cuda-linux. Its libraries are loaded by path before TorchSharp's first call, so
/// LibTorchSharp binds to them (the dynamic linker matches its dependencies to libraries already loaded). TorchSharp
/// 0.107 is built for libtorch 2.10; PyTorch 2.11's libtorch was measured to work. What is missing (the folder, a
/// library, the NVIDIA driver, a CUDA runtime library) is said in <see cref="Status"/> and in the device errors.
/// </summary>
public static class LibTorchLoader
{
    /// <summary>The environment variable naming the libtorch folder.</summary>
    public const string Variable = "MLNETFT_LIBTORCH";

    // Load order: each needs the ones before it.
    static readonly string[] CpuLibraries = ["libc10.so", "libtorch_cpu.so"];
    static readonly string[] CudaLibraries = ["libc10_cuda.so", "libtorch_cuda.so"];

    /// <summary>What the loader did: null for the cpu and cuda backends (their packages bring libtorch), else a sentence.</summary>
    public static string? Status { get; private set; }

    /// <summary>Whether the libtorch folder has CUDA libraries that loaded.</summary>
    public static bool CudaLoaded { get; private set; }

    static bool _loaded, _bound;

    /// <summary>Fails with what is missing when this is a libtorch build whose libtorch did not load (before TorchSharp fails less clearly).</summary>
    public static void EnsureLoaded()
    {
        if (TorchRuntime.TorchBackend != "libtorch" || _bound) return;
        if (!_loaded) throw new InvalidOperationException($"libtorch is not loaded: {Status}.");
        try
        {
            _ = global::TorchSharp.torch.cuda.is_available(); // TorchSharp's first call binds its native layer
            _bound = true;
        }
        catch (TypeInitializationException e)
        {
            // Another libtorch version: LibTorchSharp's symbols do not resolve against it.
            throw new InvalidOperationException($"TorchSharp's native layer (built for libtorch 2.10) did not bind to the libtorch in " +
                $"{Environment.GetEnvironmentVariable(Variable)}: use a PyTorch 2.10 or 2.11 install's torch/lib ({e.InnerException?.Message.Split('\n')[0] ?? e.Message}).", e);
        }
    }

#pragma warning disable CA2255 // a module initializer is the one hook that runs before TorchSharp's first call
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void LoadBeforeTorchSharp()
    {
        if (TorchRuntime.TorchBackend != "libtorch") return;
        (_loaded, Status) = Load(Environment.GetEnvironmentVariable(Variable));
    }

    /// <summary>Loads the libtorch in <paramref name="folder"/>: whether it loaded, and what happened; never throws.</summary>
    internal static (bool Loaded, string Status) Load(string? folder)
    {
        if (string.IsNullOrWhiteSpace(folder))
            return (false, $"this build (TorchBackend=libtorch) needs {Variable} set to an installed libtorch's lib folder, e.g. PyTorch's: " +
                   $"export {Variable}=$(python3 -c \"import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))\")");
        if (!Directory.Exists(folder)) return (false, $"{Variable} names '{folder}', which does not exist");
        var missing = CpuLibraries.Append("libtorch.so").Where(f => !File.Exists(Path.Combine(folder, f))).ToList();
        if (missing.Count > 0) return (false, $"{Variable} folder '{folder}' is not a libtorch: it has no {string.Join(", ", missing)}");
        foreach (string library in CpuLibraries)
            if (Failure(folder, library) is { } failed) return (false, failed);
        string cuda;
        if (!CudaLibraries.All(f => File.Exists(Path.Combine(folder, f))))
            cuda = "a CPU-only libtorch (no libtorch_cuda.so)";
        else if (!NativeLibrary.TryLoad("libcuda.so.1", out _))
            cuda = "CUDA libraries present, but no NVIDIA driver (libcuda.so.1 does not load)";
        else if (CudaLibraries.Select(f => Failure(folder, f)).FirstOrDefault(f => f != null) is { } failed)
            cuda = failed; // names the CUDA runtime library it lacks (libcudart, libcublas, libcudnn…)
        else
        {
            cuda = "with CUDA";
            CudaLoaded = true;
        }
        return Failure(folder, "libtorch.so") is { } last ? (false, last) : (true, $"libtorch from {folder}: {cuda}");
    }

    static string? Failure(string folder, string library)
    {
        try
        {
            NativeLibrary.Load(Path.Combine(folder, library));
            return null;
        }
        catch (DllNotFoundException e)
        {
            return $"{library} from {folder} does not load: {e.Message.Trim()}";
        }
    }
}
