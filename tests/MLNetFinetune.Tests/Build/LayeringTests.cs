using System.Text.Json;

namespace MLNetFinetune.Tests.Build;

/// <summary>Dependencies point one way: serving and exporting never pull libtorch, training never pulls ONNX Runtime.</summary>
public class LayeringTests
{
    static IReadOnlyList<string> PackagesOf(string project)
    {
        string assets = RepoPaths.Of("src", project, "obj", "project.assets.json");
        using var json = JsonDocument.Parse(File.ReadAllText(assets));
        return json.RootElement.GetProperty("libraries").EnumerateObject().Select(p => p.Name.Split('/')[0]).ToList();
    }

    [Fact]
    public void CoreReferencesNeitherTorchSharpNorOnnxRuntime()
    {
        var packages = PackagesOf("MLNetFinetune");
        Assert.DoesNotContain(packages, p => p.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase) || p.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(packages, p => p.StartsWith("Microsoft.ML.OnnxRuntime", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void InferenceSideNeverPullsLibtorch()
    {
        var packages = PackagesOf("MLNetFinetune.OnnxRuntime");
        Assert.Contains("Microsoft.ML.OnnxRuntime.Gpu", packages);
        Assert.DoesNotContain(packages, p => p.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase) || p.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(packages, p => p.Equals("Microsoft.ML.TorchSharp", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void TheServerStandsOnOnnxRuntimeAlone()
    {
        var packages = PackagesOf("MLNetFinetune.Server");
        Assert.Contains("Microsoft.ML.OnnxRuntime.Gpu", packages);
        Assert.DoesNotContain(packages, p => p.StartsWith("TorchSharp", StringComparison.OrdinalIgnoreCase) || p.StartsWith("libtorch", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public void TrainingSideUsesTheSelectedTorchSharpBackendAndNoOnnxRuntime()
    {
        var packages = PackagesOf("MLNetFinetune.TorchSharp");
        Assert.Contains(MLNetFinetune.TorchSharp.TorchRuntime.TorchBackend == "cuda" ? "TorchSharp-cuda-linux" : "TorchSharp-cpu", packages);
        Assert.DoesNotContain(packages, p => p.StartsWith("Microsoft.ML.OnnxRuntime", StringComparison.OrdinalIgnoreCase));
        Assert.DoesNotContain(packages, p => p.Equals("Microsoft.ML.TorchSharp", StringComparison.OrdinalIgnoreCase));
    }
}
