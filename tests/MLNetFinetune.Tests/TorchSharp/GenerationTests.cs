using System.Diagnostics;
using System.Text.Json.Nodes;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using Microsoft.ML;
using Microsoft.ML.Data;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

/// <summary>The shared decode loop on TorchSharp, on the bundled base model: the cache, batching and the recorded format.</summary>
[Collection(TorchCollection.Name)]
public class GenerationTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly CausalLMTransformer _base;

    static readonly string[] Prompts =
    [
        "The capital of Peru is",
        "Q: What is the chemical symbol of gold? A:",
        "Most people in Brazil speak",
        "Passage: The capital of Chile is Santiago. Chile lies in South America. Q: What is the capital of Chile? A:",
        "Iron",
        "The currency of Japan is the",
    ];

    public GenerationTests()
    {
        _base = CausalLMTransformer.Load(RepoPaths.Of("models", "facts-base"), new CausalLMScoringOptions { BatchSize = 4 }, "cpu");
    }

    public void Dispose()
    {
        _base.Dispose();
        _dir.Dispose();
    }

    [Fact]
    public void CachedGreedyDecodingGivesTheUncachedIds()
    {
        var options = new GenerationOptions { MaxNewTokens = 24 };
        var cached = Prompts.Select(p => _base.Generate(p, options)).ToList();
        Assert.Equal(_base.Runtime.GenerateUncached(Prompts, options), cached);
        Assert.Contains(cached, text => text.Length > 0);
    }

    [Fact]
    public void CachedLogitsMatchTheFullForwardPass()
    {
        var model = _base.Model;
        model.eval();
        using var _ = no_grad();
        long[] ids = _base.Tokenizer.Encode(Prompts[3]).Select(i => (long)i).ToArray();
        using var full = model.forward(tensor(ids, [1, ids.Length]));
        using var cache = model.NewCache(1, ids.Length);
        int prefill = ids.Length / 2;
        using var first = model.Forward(tensor(ids[..prefill], [1, prefill]), cache: cache);
        Assert.True(allclose(full[.., ..prefill], first, rtol: 0, atol: 1e-4));
        for (int t = prefill; t < ids.Length; t++)
        {
            using var step = model.Forward(tensor(new[] { ids[t] }, [1, 1]), cache: cache);
            Assert.True(allclose(full[.., t..(t + 1)], step, rtol: 0, atol: 1e-4), $"position {t}");
        }
        Assert.Equal(ids.Length, cache.Length);

        // An HF-style 0/1 padding mask would be added to the scores silently; the model refuses it.
        var wrong = Assert.Throws<ArgumentException>(() => model.Forward(tensor(ids, [1, ids.Length]), attentionMask: ones(1, ids.Length, dtype: int64)));
        Assert.Contains("boolean [batch, 1, seq, past + seq] mask", wrong.Message);
    }

    [Fact]
    public void BatchedGenerationAndScoringEqualOneByOne()
    {
        var greedy = new GenerationOptions { MaxNewTokens = 16 };
        var batched = _base.Runtime.Generate(Prompts, greedy, batchSize: 4);
        var single = Prompts.Select(p => _base.Runtime.Generate([p], greedy, batchSize: 1)[0]).ToList();
        Assert.Equal(single, batched);
        Assert.Contains(batched, text => text.Length > 0);

        var pairs = Prompts.Select(p => (p, " Lima")).ToList();
        var losses = _base.ScoreResponses(pairs);
        for (int i = 0; i < pairs.Count; i++)
            Assert.Equal(_base.WithScoring(new CausalLMScoringOptions { BatchSize = 1 }).ScoreResponse(pairs[i].Item1, pairs[i].Item2), losses[i], 1e-5);
    }

    [Fact]
    public void LeftPaddedBatchesGiveTheSameLogitsAndTextInTorchSharpAndOnnxRuntime()
    {
        string onnx = OnnxExporter.Export(RepoPaths.Of("models", "facts-base"), new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "onnx") });
        using var ort = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        IDecoderModel torchModel = _base.Runtime, ortModel = ort;

        // Two prompts of different lengths, left-padded: prefill, then two cached steps, each runtime through its session.
        var encoded = Prompts[..2].Select(p => _base.Tokenizer.Encode(p).Select(i => (long)i).ToArray()).ToArray();
        int longest = encoded.Max(e => e.Length), vocab = _base.Model.Config.VocabSize;
        var ids = new long[2 * longest];
        var positions = new long[2 * longest];
        var mask = new List<long>[2];
        for (int r = 0; r < 2; r++)
        {
            int offset = longest - encoded[r].Length;
            mask[r] = [.. Enumerable.Repeat(0L, offset), .. Enumerable.Repeat(1L, encoded[r].Length)];
            for (int t = 0; t < longest; t++)
            {
                ids[r * longest + t] = t < offset ? torchModel.PadId : encoded[r][t - offset];
                positions[r * longest + t] = Math.Max(0, t - offset);
            }
        }
        using var torchSession = torchModel.Start(2, longest + 2);
        using var ortSession = ortModel.Start(2, longest + 2);
        for (int step = 0; step < 3; step++)
        {
            long[] flatMask = [.. mask[0], .. mask[1]];
            var expected = torchSession.Step(ids, positions, flatMask, 2);
            var actual = ortSession.Step(ids, positions, flatMask, 2);
            Assert.Equal(2 * vocab, actual.Length);
            Assert.InRange(expected.Zip(actual, (a, b) => Math.Abs(a - b)).Max(), 0, 1e-4);
            ids = [Sampling.Next(expected[..vocab], new GenerationOptions(), new Random(0), [], vocab), Sampling.Next(expected[vocab..], new GenerationOptions(), new Random(0), [], vocab)];
            positions = [mask[0].Sum(), mask[1].Sum()];
            mask[0].Add(1);
            mask[1].Add(1);
        }

        var greedy = new GenerationOptions { MaxNewTokens = 16 };
        Assert.Equal(_base.Runtime.Generate(Prompts, greedy, batchSize: 4), DecodeLoop.Generate(ort, Prompts, greedy, batchSize: 4));
    }

    [Fact]
    public void TheTransformGeneratesInBlocksWhatTheRuntimeGeneratesAlone()
    {
        var ml = new MLContext(seed: 0);
        var data = ml.Data.LoadFromEnumerable(Prompts.Select(p => new PromptRow { Prompt = p }));
        var scoring = new CausalLMScoringOptions { TextColumnName = null, PromptColumnName = "Prompt", Generation = new GenerationOptions { MaxNewTokens = 10 }, BatchSize = 4 };
        var generated = _base.WithScoring(scoring).Transform(data).GetColumn<string>("Generated").ToList();
        Assert.Equal(Prompts.Select(p => _base.Generate(p, scoring.Generation)), generated);
    }

    [Fact]
    public void ThePromptFormatTravelsThroughTheModelFolderAndTheOnnxFolder()
    {
        string folder = Path.Combine(_dir.Path, "model");
        var format = PromptTemplates.QuestionAnswerInline;
        new CausalLMTransformer(_base.Model, _base.Tokenizer, format: format).Save(folder);

        using var loaded = CausalLMTransformer.Load(folder, device: "cpu");
        Assert.Equal(format.Name, loaded.Format!.Name);
        Assert.Equal(format.Prompt.Text, loaded.Format.Prompt.Text);
        Assert.Equal(format.Response.Text, loaded.Format.Response.Text);

        string onnx = OnnxExporter.Export(folder, new OnnxExportOptions { OutputDirectory = Path.Combine(_dir.Path, "onnx") });
        using var runtime = OnnxCausalLM.Load(onnx, "cpu", threads: 1);
        Assert.Equal(format.Response.Text, runtime.Format!.Response.Text);
        Assert.Equal(format.Prompt.Text, runtime.Format.Prompt.Text);

        // Hugging Face renders the recorded chat template (Jinja, as apply_chat_template does) into the training text.
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(onnx, PromptFormats.TokenizerConfigFile)))!;
        string rendered = RenderWithJinja(config["chat_template"]!.GetValue<string>(), config["eos_token"]!.GetValue<string>(), "What is the capital of Peru?", "Lima");
        Assert.Equal(format.Training.Format(("question", "What is the capital of Peru?"), ("answer", "Lima")) + TextTokenizerEndOfText, rendered);

        // Exporting a model without a format into the same folder leaves no stale format behind.
        OnnxExporter.Export(RepoPaths.Of("models", "facts-base"), new OnnxExportOptions { OutputDirectory = onnx });
        Assert.Null(PromptFormats.Load(onnx));
        Assert.False(File.Exists(Path.Combine(onnx, PromptFormats.TokenizerConfigFile)));
    }

    [Fact]
    public void AlpacaFormatFromAFileRoundTripsWithItsAlternative()
    {
        string file = Path.Combine(_dir.Path, "format.json");
        PromptFormats.Save(PromptTemplates.Alpaca, _dir.Path, eosToken: null);
        File.Move(Path.Combine(_dir.Path, PromptFormats.FormatFile), file);
        var read = PromptFormats.Resolve(file);
        Assert.Equal(PromptTemplates.Alpaca.Training.Format(("instruction", "Add."), ("input", ""), ("output", "5")),
            read.Training.Format(("instruction", "Add."), ("input", ""), ("output", "5")));
        Assert.Contains("Unknown prompt format 'nope'", Assert.Throws<ArgumentException>(() => PromptFormats.Resolve("nope")).Message);
        File.WriteAllText(file, "{\"prompt\": ");
        var malformed = Assert.Throws<DataFileException>(() => PromptFormats.Resolve(file));
        Assert.Contains("format.json:1: malformed prompt format (", malformed.Message);
        File.WriteAllText(file, "[\"prompt\"]");
        Assert.Contains("a prompt format is a JSON object", Assert.Throws<InvalidDataException>(() => PromptFormats.Resolve(file)).Message);
        File.WriteAllText(file, "{\"prompt\": \"Q: {question}\", \"response\": \"A\"}");
        Assert.Contains("exactly one {field} placeholder", Assert.Throws<InvalidDataException>(() => PromptFormats.Resolve(file)).Message);
    }

    const string TextTokenizerEndOfText = MLNetFinetune.Tokenization.TextTokenizer.EndOfText;

    // Jinja2 (Debian's python3-jinja2) with the settings transformers' apply_chat_template uses.
    static string RenderWithJinja(string template, string eos, string user, string assistant)
    {
        const string script = "import jinja2, json, sys\n" +
            "a = json.load(sys.stdin)\n" +
            "env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)\n" +
            "msgs = [{'role': 'user', 'content': a['user']}, {'role': 'assistant', 'content': a['assistant']}]\n" +
            "sys.stdout.write(env.from_string(a['template']).render(messages=msgs, eos_token=a['eos'], add_generation_prompt=False))\n";
        var start = new ProcessStartInfo(DebianPython.Path, ["-c", "import jinja2.sandbox\n" + script])
        { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        process.StandardInput.Write(new JsonObject { ["template"] = template, ["eos"] = eos, ["user"] = user, ["assistant"] = assistant }.ToJsonString());
        process.StandardInput.Close();
        string output = process.StandardOutput.ReadToEnd();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, error);
        return output;
    }

    sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }
}
