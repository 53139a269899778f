using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.ModelFiles;

namespace MLNetFinetune.Tests.Export;

/// <summary>A failed export leaves nothing it created: no output folder if there was none, an existing one as it was.</summary>
public class OnnxExportFailureTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    // A copy of the bundled base model whose weights lack the output head: config and tokenizer read fine, the
    // weights file opens, and the export fails while building the graph, after it started writing.
    string ModelWithoutOutputHead()
    {
        string source = RepoPaths.Of("models", "facts-base"), dir = Path.Combine(_dir.Path, "model");
        Directory.CreateDirectory(dir);
        foreach (string file in Directory.GetFiles(source).Where(f => Path.GetFileName(f) != ModelDirectory.WeightsFile))
            File.Copy(file, Path.Combine(dir, Path.GetFileName(file)));
        using var weights = SafeTensorsFile.Open(Path.Combine(source, ModelDirectory.WeightsFile));
        SafeTensorsFile.WriteFloat32(Path.Combine(dir, ModelDirectory.WeightsFile),
            weights.Tensors.Values.Where(t => t.Name != "embed_out.weight").Select(t => (t.Name, t.Shape, weights.ReadFloat32(t.Name))));
        return dir;
    }

    static string[] Listing(string dir) =>
        Directory.GetFileSystemEntries(dir, "*", SearchOption.AllDirectories).Select(p => Path.GetRelativePath(dir, p)).Order(StringComparer.Ordinal).ToArray();

    [Fact]
    public void AFailedExportLeavesNoFolderBehindWhereThereWasNone()
    {
        string model = ModelWithoutOutputHead();
        var before = Listing(_dir.Path);

        var e = Assert.Throws<KeyNotFoundException>(() => OnnxExporter.Export(model));
        Assert.Contains("embed_out.weight", e.Message);
        Assert.Contains("embed_out.weight", Assert.Throws<KeyNotFoundException>(() => OnnxExporter.Export(model, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "new", "deeper", "onnx") })).Message);

        Assert.Equal(before, Listing(_dir.Path)); // no onnx/, no new/, no staging folder
    }

    [Fact]
    public void AFailedExportIntoAnExistingFolderLeavesItsContentUntouched()
    {
        string model = ModelWithoutOutputHead();
        string output = Path.Combine(_dir.Path, "existing");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "notes.txt"), "mine");
        File.WriteAllText(Path.Combine(output, OnnxExporter.ModelFile), "an earlier export");
        var before = Listing(_dir.Path);

        Assert.Contains("embed_out.weight", Assert.Throws<KeyNotFoundException>(() => OnnxExporter.Export(model, new OnnxExportOptions { OutputDirectory = output })).Message);

        Assert.Equal(before, Listing(_dir.Path));
        Assert.Equal("mine", File.ReadAllText(Path.Combine(output, "notes.txt")));
        Assert.Equal("an earlier export", File.ReadAllText(Path.Combine(output, OnnxExporter.ModelFile)));
    }

    [Fact]
    public void BadWeightsOrConfigFailBeforeAnythingIsWritten()
    {
        string model = ModelWithoutOutputHead();
        File.WriteAllBytes(Path.Combine(model, ModelDirectory.WeightsFile), [1, 2, 3]);
        var before = Listing(_dir.Path);
        var weights = Assert.Throws<DataFileException>(() => OnnxExporter.Export(model));
        Assert.Equal(Path.Combine(model, ModelDirectory.WeightsFile), weights.FilePath);
        File.WriteAllText(Path.Combine(model, ModelDirectory.ConfigFile), "{\"model_type\": \"gpt_neox\", \"vocab_size\": ");
        var config = Assert.Throws<DataFileException>(() => OnnxExporter.Export(model, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "x", "onnx") }));
        Assert.Equal(Path.Combine(model, ModelDirectory.ConfigFile), config.FilePath);
        Assert.Equal(before, Listing(_dir.Path));
    }

    [Fact]
    public void ASuccessfulExportIntoAnExistingFolderKeepsOtherFiles()
    {
        string output = Path.Combine(_dir.Path, "existing");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "notes.txt"), "mine");
        File.WriteAllText(Path.Combine(output, OnnxExporter.ModelFile + ".data"), "stale weights of a larger export");

        Assert.Equal(output, OnnxExporter.Export(RepoPaths.Of("models", "facts-base"), new OnnxExportOptions { OutputDirectory = output }));

        Assert.Equal(["config.json", "genai_config.json", "generation_config.json", "merges.txt", "model.onnx", "notes.txt", "tokenizer.json", "vocab.json"],
            Listing(output));
        Assert.True(new FileInfo(Path.Combine(output, OnnxExporter.ModelFile)).Length > 16_000_000);
        Assert.DoesNotContain(Directory.GetDirectories(_dir.Path), d => Path.GetFileName(d).StartsWith('.'));
    }
}
