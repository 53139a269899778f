using Microsoft.Data.Analysis;
using Microsoft.ML.OnnxRuntimeGenAI;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using Xunit;
using static TorchSharp.torch;

namespace MLNetFinetune.GenAI.Tests;

public class GenAIInteropTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("genai").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void OnnxRuntimeGenAIRunsTheExportedFolderAndAgreesOnGreedyTokens()
    {
        var tokenizer = BpeTrainer.Train(new DataFrame(new StringDataFrameColumn("Text",
            ["What is the capital of Chile? The capital of Chile is Santiago. What is the capital of Peru? Lima."])), new BpeTrainerOptions { VocabSize = 320 });
        manual_seed(5);
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320));
        using (no_grad()) foreach (var p in model.parameters()) if (p.dim() >= 2) p.mul_(5);
        string dir = Path.Combine(_dir, "model");
        HfCheckpoint.Save(model, tokenizer, dir);
        string onnx = OnnxExporter.Export(dir);

        using var transformer = new CausalLMTransformer(model, tokenizer);
        var prompt = tokenizer.Encode("What is the capital of");
        string expected = transformer.Generate("What is the capital of", new GenerationOptions { MaxNewTokens = 10 });
        var expectedIds = tokenizer.Encode(expected).ToArray();

        using var config = new Config(onnx);
        using var genai = new Model(config);
        using var parameters = new GeneratorParams(genai);
        parameters.SetSearchOption("max_length", prompt.Count + 10);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Microsoft.ML.OnnxRuntimeGenAI.Generator(genai, parameters);
        generator.AppendTokens(prompt.ToArray());
        var produced = new List<int>();
        while (!generator.IsDone()) generator.GenerateNextToken();
        produced.AddRange(generator.GetSequence(0).ToArray().Skip(prompt.Count));
        Assert.Equal(expected, tokenizer.Decode(produced.TakeWhile(t => t != tokenizer.EosId)));
    }
}
