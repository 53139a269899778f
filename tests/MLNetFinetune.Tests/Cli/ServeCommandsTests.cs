using Microsoft.Data.Analysis;
using MLNetFinetune.Cli;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.Cli;

[Collection(TorchCollection.Name)]
public class ServeCommandsTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void ExportsAModelDirectoryAndGeneratesFromIt()
    {
        var tokenizer = BpeTrainer.Train(new DataFrame(new StringDataFrameColumn("Text", ["What is the capital of Chile? Santiago. What is the capital of Peru? Lima."])),
            new BpeTrainerOptions { VocabSize = 300 });
        manual_seed(4);
        using (var model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320))) HfCheckpoint.Save(model, tokenizer, Path.Combine(_dir.Path, "model"));

        var output = new StringWriter();
        var error = new StringWriter();
        Assert.Equal(0, CliApp.Run(["export", Path.Combine(_dir.Path, "model"), "--out", Path.Combine(_dir.Path, "onnx")], output, error));
        Assert.Contains("exported to", output.ToString());

        var generated = new StringWriter();
        Assert.Equal(0, CliApp.Run(["generate", Path.Combine(_dir.Path, "onnx"), "-p", "What is the", "--max-new-tokens", "6", "--provider", "cpu"], generated, error));
        Assert.Equal("", error.ToString());
        using var ort = OnnxCausalLM.Load(Path.Combine(_dir.Path, "onnx"), "cpu", threads: 1);
        Assert.Equal(ort.Generate("What is the", new GenerationOptions { MaxNewTokens = 6 }), generated.ToString().TrimEnd('\n'));

        // The model directory itself runs in TorchSharp and continues the prompt the same way.
        var fromDirectory = new StringWriter();
        Assert.Equal(0, CliApp.Run(["generate", Path.Combine(_dir.Path, "model"), "-p", "What is the", "--max-new-tokens", "6", "--device", "cpu", "--threads", "1"], fromDirectory, error));
        Assert.Equal(generated.ToString(), fromDirectory.ToString());

        var missing = new StringWriter();
        Assert.Equal(1, CliApp.Run(["generate", _dir.Path, "-p", "x", "--provider", "cpu"], new StringWriter(), missing));
        Assert.Contains("is neither an exported folder (it has no model.onnx) nor a model directory (it has no config.json)", missing.ToString());
        var neither = new StringWriter();
        Assert.Equal(1, CliApp.Run(["generate", Path.Combine(_dir.Path, "onnx")], new StringWriter(), neither));
        Assert.Contains("Give the prompt as --prompt or as --ids", neither.ToString());
    }
}
