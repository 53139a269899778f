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

    // A tiny model of the family with its tokenizer, saved as a model directory.
    (string Dir, TransformerForCausalLM Model, TextTokenizer Tokenizer) Saved(string family)
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
        var model = new TransformerForCausalLM(shape);
        // Sharp, varied logits (weights at a larger scale), and non-zero biases so that a bias the graph dropped shows.
        using (no_grad())
            foreach (var (name, p) in model.named_parameters())
                if (p.dim() >= 2) p.mul_(5);
                else if (name.EndsWith(".bias", StringComparison.Ordinal)) nn.init.normal_(p, 0, 0.5);
        string dir = Path.Combine(_dir, family);
        HfCheckpoint.Save(model, tokenizer, dir);
        return (dir, model, tokenizer);
    }

    // GenAI's greedy continuation of the prompt on an exported folder (ids after the prompt).
    static long[] GenAiGreedy(string folder, IReadOnlyList<int> prompt, int newTokens)
    {
        using var config = new Config(folder);
        using var genai = new Model(config);
        using var parameters = new GeneratorParams(genai);
        parameters.SetSearchOption("max_length", prompt.Count + newTokens);
        parameters.SetSearchOption("do_sample", false);
        using var generator = new Microsoft.ML.OnnxRuntimeGenAI.Generator(genai, parameters);
        generator.AppendTokens(prompt.ToArray());
        while (!generator.IsDone()) generator.GenerateNextToken();
        return generator.GetSequence(0).ToArray().Skip(prompt.Count).Select(t => (long)t).ToArray();
    }

    // GPT-NeoX (exported under GenAI's "llama" type), a Llama with grouped-query attention, a tied head and llama3
    // rotary scaling, and a Qwen2 (q/k/v biases, multi-query) under GenAI's "qwen2" type.
    [Theory]
    [InlineData("gpt_neox")]
    [InlineData("llama")]
    [InlineData("qwen2")]
    public void OnnxRuntimeGenAIRunsTheExportedFolderAndAgreesOnGreedyTokens(string family)
    {
        var (dir, model, tokenizer) = Saved(family);
        using var _ = model;
        string onnx = OnnxExporter.Export(dir);
        var prompt = tokenizer.Encode("What is the capital of");
        long[] expected = DecodeLoop.GenerateIds(new TorchCausalLM(model, tokenizer), [prompt.Select(t => (long)t).ToArray()], new GenerationOptions { MaxNewTokens = 10 })[0];
        long[] produced = GenAiGreedy(onnx, prompt, 10);
        Assert.True(expected.Length > 3, $"the {family} model ends its text after {expected.Length} tokens; too few to compare");
        Assert.Equal(expected, produced);
    }

    // An int4 export (MatMulNBits, GatherBlockQuantized; a tied Llama head shares the embedding's blocks): GenAI loads the
    // folder and continues greedily as our ONNX Runtime generator does on it. Ours runs as the CLI in a child process:
    // it uses the GPU ONNX Runtime package, which cannot share this project with GenAI's CPU one.
    [Theory]
    [InlineData("gpt_neox")]
    [InlineData("llama")]
    public void OnnxRuntimeGenAIRunsAnInt4ExportAndAgreesWithOurGenerator(string family)
    {
        var (dir, model, tokenizer) = Saved(family);
        model.Dispose();
        // Blocks of 32 tile these rows of 64, so the embedding is quantized too (the default 128 would leave it float).
        string onnx = OnnxExporter.Export(dir, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir, family + "-int4"), Quantization = new WeightQuantization { BlockSize = 32 } });
        var ops = Onnx.ModelProto.Parser.ParseFrom(File.ReadAllBytes(Path.Combine(onnx, OnnxExporter.ModelFile))).Graph.Node.Select(n => n.OpType).ToList();
        Assert.Contains("MatMulNBits", ops);
        Assert.Contains("GatherBlockQuantized", ops);
        var prompt = tokenizer.Encode("What is the capital of");
        string ours = Cli("generate", onnx, "--ids", string.Join(",", prompt), "--print-ids", "--max-new-tokens", "10", "--provider", "cpu", "--threads", "1");
        long[] expected = ours.Trim().Split(',').Skip(prompt.Count).Select(long.Parse).ToArray();
        long[] produced = GenAiGreedy(onnx, prompt, 10);
        Assert.True(expected.Length > 3, $"the {family} int4 model ends its text after {expected.Length} tokens; too few to compare");
        Assert.Equal(expected, produced);
    }

    // Runs the CLI the solution built (building it first when it is missing) and returns its standard output.
    static string Cli(params string[] args)
    {
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root != null && !File.Exists(Path.Combine(root.FullName, "MLNetFinetune.sln"))) root = root.Parent;
        Assert.NotNull(root);
        string project = Path.Combine(root.FullName, "src", "MLNetFinetune.Cli");
        string dll = Path.Combine(project, "bin", "Release", "net10.0", "mlnet-finetune.dll");
        if (!File.Exists(dll)) Run("dotnet", ["build", project, "-c", "Release", "-v", "quiet", "-nologo"]);
        return Run("dotnet", [dll, .. args]);
    }

    static string Run(string program, string[] args)
    {
        var start = new System.Diagnostics.ProcessStartInfo(program, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = System.Diagnostics.Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"{program} {string.Join(' ', args)} failed ({process.ExitCode}): {error.Result}{output}");
        return output;
    }
}
