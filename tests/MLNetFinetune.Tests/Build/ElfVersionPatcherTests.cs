using System.Reflection;
using MLNetFinetune.Build;

namespace MLNetFinetune.Tests.Build;

public class ElfVersionPatcherTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("elfpatch").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    static string Metadata(string key) =>
        typeof(ElfVersionPatcherTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;

    static string PristineLibrary() => Path.Combine(Metadata("NuGetPackageRoot"), "torchsharp", Metadata("TorchSharpVersion"),
        "runtimes", "linux-x64", "native", "libLibTorchSharp.so");

    [Fact]
    public void WeakensTheRequirementOnceAndLeavesTheRestOfTheFileAlone()
    {
        string copy = Path.Combine(_dir, "libLibTorchSharp.so");
        File.Copy(PristineLibrary(), copy);
        byte[] before = File.ReadAllBytes(copy);
        Assert.True(ElfVersionPatcher.RequiresStrongly(copy, ElfVersionPatcher.Glibcxx3432));

        Assert.Equal(PatchResult.Patched, ElfVersionPatcher.WeakenVersionRequirement(copy, ElfVersionPatcher.Glibcxx3432, ElfVersionPatcher.IosBaseLibraryInit));
        Assert.False(ElfVersionPatcher.RequiresStrongly(copy, ElfVersionPatcher.Glibcxx3432));
        byte[] after = File.ReadAllBytes(copy);
        Assert.Equal(before.Length, after.Length);
        int changedBytes = before.Zip(after).Count(p => p.First != p.Second);
        Assert.InRange(changedBytes, 2, 4); // one flag byte, one or two versym bytes

        Assert.Equal(PatchResult.AlreadyPatched, ElfVersionPatcher.WeakenVersionRequirement(copy, ElfVersionPatcher.Glibcxx3432, ElfVersionPatcher.IosBaseLibraryInit));
        Assert.Equal(after, File.ReadAllBytes(copy));
    }

    [Fact]
    public void ALibraryThatDoesNotNeedTheVersionIsNotTouched()
    {
        string host = ElfVersionPatcher.FindHostLibstdcxx()!;
        string copy = Path.Combine(_dir, "libstdc++.so.6");
        File.Copy(host, copy);
        Assert.Equal(PatchResult.NotRequired, ElfVersionPatcher.WeakenVersionRequirement(copy, ElfVersionPatcher.Glibcxx3432, ElfVersionPatcher.IosBaseLibraryInit));
        Assert.True(ElfVersionPatcher.DefinesVersion(copy, "GLIBCXX_3.4"));
        Assert.False(ElfVersionPatcher.DefinesVersion(copy, "GLIBCXX_99.0"));
    }

    [Fact]
    public void ANonElfFileIsRejectedWithItsName()
    {
        string bogus = Path.Combine(_dir, "libLibTorchSharp.so");
        File.WriteAllText(bogus, "this is not a shared library");
        var e = Assert.Throws<InvalidDataException>(() =>
            ElfVersionPatcher.WeakenVersionRequirement(bogus, ElfVersionPatcher.Glibcxx3432, ElfVersionPatcher.IosBaseLibraryInit));
        Assert.Contains(bogus, e.Message);
        Assert.Contains("not an ELF file", e.Message);
    }
}
