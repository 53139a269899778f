using MLNetFinetune.TorchSharp;

namespace MLNetFinetune.Tests.TorchSharp;

/// <summary>
/// The libtorch backend's start-up checks name what is missing. (Loading a real libtorch is checked by CI in a build
/// with -p:TorchBackend=libtorch: this process already has the cpu backend's libtorch loaded.)
/// </summary>
public class LibTorchLoaderTests
{
    [Fact]
    public void EachMissingPieceIsNamed()
    {
        var (loaded, status) = LibTorchLoader.Load(null);
        Assert.False(loaded);
        Assert.Contains("needs MLNETFT_LIBTORCH set", status);
        Assert.Contains("import torch", status);

        using var dir = new TempDirectory();
        string gone = Path.Combine(dir.Path, "nowhere");
        Assert.Equal((false, $"MLNETFT_LIBTORCH names '{gone}', which does not exist"), LibTorchLoader.Load(gone));
        Assert.Equal((false, $"MLNETFT_LIBTORCH folder '{dir.Path}' is not a libtorch: it has no libc10.so, libtorch_cpu.so, libtorch.so"), LibTorchLoader.Load(dir.Path));

        foreach (string library in new[] { "libc10.so", "libtorch_cpu.so", "libtorch.so" }) dir.File(library, "not a shared library");
        (loaded, status) = LibTorchLoader.Load(dir.Path);
        Assert.False(loaded);
        Assert.StartsWith($"libc10.so from {dir.Path} does not load: ", status);
    }

    [Fact]
    public void TheCpuBackendNeedsNoLoader()
    {
        Assert.Equal("cpu", TorchRuntime.TorchBackend);
        Assert.Null(LibTorchLoader.Status);
        LibTorchLoader.EnsureLoaded();
    }
}
