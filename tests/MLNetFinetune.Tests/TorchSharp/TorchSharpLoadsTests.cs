using MLNetFinetune.Build;
using MLNetFinetune.TorchSharp;
using TorchSharp;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

[Collection(TorchCollection.Name)]
public class TorchSharpLoadsTests
{
    [Fact]
    public void NativeLibraryLoadsAndMultipliesMatrices()
    {
        using var a = tensor(new float[] { 1, 2, 3, 4, 5, 6 }, 2, 3);
        using var b = tensor(new float[] { 7, 8, 9, 10, 11, 12 }, 3, 2);
        using var c = matmul(a, b);
        Assert.Equal(new long[] { 2, 2 }, c.shape);
        Assert.Equal(new float[] { 58, 64, 139, 154 }, c.data<float>().ToArray());
    }

    [Fact]
    public void CpuDeviceResolvesAndUnknownDeviceIsRejected()
    {
        Assert.Equal(DeviceType.CPU, TorchRuntime.ResolveDevice("cpu").type);
        Assert.Equal("cpu (asked for)", TorchRuntime.ChooseDevice(" CPU ").Description);
        if (!cuda.is_available())
        {
            Assert.Equal(DeviceType.CPU, TorchRuntime.ResolveDevice("auto").type);
            Assert.Equal($"cpu (auto: libtorch sees no CUDA GPU; this build's backend is {TorchRuntime.TorchBackend})", TorchRuntime.ChooseDevice("auto").Description);
            var e = Assert.Throws<InvalidOperationException>(() => TorchRuntime.ResolveDevice("cuda"));
            Assert.Contains("no CUDA GPU", e.Message);
        }
        var bad = Assert.Throws<ArgumentException>(() => TorchRuntime.ResolveDevice("tpu"));
        Assert.Contains("'tpu'", bad.Message);
    }

    [Fact]
    public void OutputCopyOfTheNativeLibraryIsLoadableOnThisHost()
    {
        string copy = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (!OperatingSystem.IsLinux() || !File.Exists(copy)) return; // only meaningful where the Linux library ships
        string? host = ElfVersionPatcher.FindHostLibstdcxx();
        Assert.NotNull(host);
        if (!ElfVersionPatcher.DefinesVersion(host!, ElfVersionPatcher.Glibcxx3432))
            Assert.False(ElfVersionPatcher.RequiresStrongly(copy, ElfVersionPatcher.Glibcxx3432),
                "the build should have weakened GLIBCXX_3.4.32 in the output copy");
    }
}
