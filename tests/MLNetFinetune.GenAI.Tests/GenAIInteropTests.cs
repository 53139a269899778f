using Microsoft.Data.Analysis;
using Microsoft.ML.OnnxRuntimeGenAI;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using Xunit;
using static TorchSharp.torch;

namespace MLNetFinetune.GenAI.Tests;

public class GenAIInteropTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("genai").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    // GPT-NeoX (exported under GenAI's "llama" type), a Llama with grouped-query attention, a tied head and llama3
    // rotary scaling, and a Qwen2 (q/k/v biases, multi-query) under GenAI's "qwen2" type.
    [Theory]
    [InlineData("gpt_neox")]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void OnnxRuntimeGenAIRunsTheExportedFolderAndAgreesOnGreedyTokens(string family)
    {
        var tokenizer = BpeTrainer.Train(new DataFrame(new StringDataFrameColumn("Text",
            ["What is the capital of Chile? The capital of Chile is Santiago. What is the capital of Peru? Lima."])), new BpeTrainerOptions { VocabSize = 320 });
        // The model's vocabulary is the tokenizer's (this short text trains fewer than 320 tokens): our decode loop never
        // picks an id the tokenizer lacks, GenAI would.
        int vocab = tokenizer.VocabSize;
        var shape = family switch
        {
            "gpt_neox" => ModelConfig.Preset("tiny", vocab),
            "llama" => ModelConfig.Preset("tiny-llama", vocab),
            _ => ModelConfig.Preset("tiny-llama", vocab) with
            {
                ModelType = "qwen2", Architectures = ["Qwen2ForCausalLM"], NumKeyValueHeads = 1, TieWordEmbeddings = false, RopeScaling = null, RopeTheta = 1e6,
            },
        };
        manual_seed(5);
        using var model = new TransformerForCausalLM(shape);
        // Sharp, varied logits (weights at a larger scale), and non-zero biases so that a bias the graph dropped shows.
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (p.dim() >= 2) p.mul_(5);
                else if (name.EndsWith(".bias", StringComparison.Ordinal)) nn.init.normal_(p, 0, 0.5);
        string dir = Path.Combine(_dir, family);
        HfCheckpoint.Save(model, tokenizer, dir);
        string onnx = OnnxExporter.Export(dir);

        var prompt = tokenizer.Encode("What is the capital of");
        long[] expected = DecodeLoop.GenerateIds(new TorchCausalLM(model, tokenizer), [prompt.Select(t => (long)t).ToArray()], new GenerationOptions { MaxNewTokens = 10 })[0];

        using var config = new Config(onnx);
        using var genai = new Model(config);
        using var parameters = new GeneratorParams(genai);
        parameters.SetSearchOption("max_length", prompt.Count + 10);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Microsoft.ML.OnnxRuntimeGenAI.Generator(genai, parameters);
        generator.AppendTokens(prompt.ToArray());
        while (!generator.IsDone()) generator.GenerateNextToken();
        long[] produced = generator.GetSequence(0).ToArray().Skip(prompt.Count).Select(t => (long)t).ToArray();
        Assert.True(expected.Length > 3, $"the {family} model ends its text after {expected.Length} tokens; too few to compare");
        Assert.Equal(expected, produced);
    }
}
