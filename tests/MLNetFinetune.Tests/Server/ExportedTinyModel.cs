using MLNetFinetune.Export;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.Server;

/// <summary>
/// A tiny GPT-NeoX (random weights at a larger scale, so its logits are sharp and greedy choices stable) saved and
/// exported to ONNX once for a test class, in float32 (what the server and the batcher serve) and float16.
/// </summary>
public sealed class ExportedTinyModel : IDisposable
{
    readonly TempDirectory _dir = new();

    public ExportedTinyModel()
    {
        manual_seed(11);
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320));
        using (no_grad()) foreach (var p in model.parameters()) if (p.dim() >= 2) p.mul_(5);
        string dir = Path.Combine(_dir.Path, "tiny");
        HfCheckpoint.Save(model, TestTokenizers.Small(), dir);
        Folder = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "served") });
        Float16Folder = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "served-fp16"), Float16 = true });
    }

    /// <summary>The exported folder; its name, <c>served</c>, is the model id the server answers to.</summary>
    public string Folder { get; }

    /// <summary>The same model exported in float16 (its cache too).</summary>
    public string Float16Folder { get; }

    public void Dispose() => _dir.Dispose();
}
