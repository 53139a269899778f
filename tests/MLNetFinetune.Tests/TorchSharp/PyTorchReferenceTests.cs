using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json.Nodes;
using MLNetFinetune.Export;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

/// <summary>
/// Model folders written by the independent PyTorch reference (tests/reference/gpt_neox_reference.py: its own random
/// weights, its own safetensors writer, HF names and config fields) with its logits, one Python process for all cases
/// (importing torch takes seconds). Needs Debian's python3-torch; .ci/run installs it.
/// </summary>
public sealed class PyTorchReferenceModels : IDisposable
{
    public const int Vocab = 320;
    public static readonly long[][] Ids = [[5, 17, 42, 99, 7, 3, 250, 11, 64, 300], [1, 2, 3, 4, 310, 6, 7, 8, 9, 10]];

    // (use_parallel_residual, rotary_pct): both residual layouts, partial and full rotary.
    public static readonly (bool Parallel, double RotaryPct)[] Cases = [(true, 0.25), (false, 0.25), (true, 1.0), (false, 1.0)];

    readonly TempDirectory _dir = new();
    readonly Lazy<string> _written;

    public PyTorchReferenceModels() => _written = new Lazy<string>(Write);

    public string Folder(bool parallel, double rotaryPct)
    {
        _ = _written.Value;
        return Path.Combine(_dir.Path, $"parallel-{parallel}-rotary-{rotaryPct}");
    }

    string Write()
    {
        var cases = new JsonArray(Cases.Select((c, i) => (JsonNode)new JsonObject
        {
            ["dir"] = Path.Combine(_dir.Path, $"parallel-{c.Parallel}-rotary-{c.RotaryPct}"),
            ["seed"] = i + 1,
            ["ids"] = new JsonArray(Ids.Select(row => (JsonNode)new JsonArray(row.Select(t => (JsonNode)t).ToArray())).ToArray()),
            ["config"] = new JsonObject { ["vocab_size"] = Vocab, ["use_parallel_residual"] = c.Parallel, ["rotary_pct"] = c.RotaryPct },
        }).ToArray());
        string casesPath = _dir.File("cases.json", cases.ToJsonString());
        RunReference(["write", casesPath]);

        // Loading a folder needs a tokenizer; the reference knows none, so the test adds one that fits the vocabulary.
        var tokenizer = TestTokenizers.Small(Vocab);
        foreach (var (parallel, rotaryPct) in Cases) tokenizer.Save(Path.Combine(_dir.Path, $"parallel-{parallel}-rotary-{rotaryPct}"));
        return _dir.Path;
    }

    static void RunReference(string[] arguments) => RunScript("gpt_neox_reference.py", arguments);

    /// <summary>Runs a reference script of tests/reference on Debian's python3, failing with its output (and how to install torch).</summary>
    public static void RunScript(string script, string[] arguments)
    {
        const string install = "The PyTorch reference needs Debian's python3-torch: apt-get install -y python3-torch python3-numpy libopenblas0-pthread (.ci/run does this).";
        string python = DebianPython.Path;
        var start = new ProcessStartInfo(python, [RepoPaths.Of("tests", "reference", script), .. arguments])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        Process process;
        try
        {
            process = Process.Start(start)!;
        }
        catch (Win32Exception e)
        {
            throw new InvalidOperationException($"{install} ({python}: {e.Message})", e);
        }
        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync();
            string error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
                throw new InvalidOperationException(
                    (error.Contains("No module named 'torch'") || error.Contains("No module named 'numpy'") ? install + "\n" : "") +
                    $"{python} {script} {string.Join(' ', arguments)} exited with {process.ExitCode}:\n{output.Result}{error}");
        }
    }

    public static float[] ReferenceLogits(string folder)
    {
        byte[] bytes = File.ReadAllBytes(Path.Combine(folder, "reference_logits.f32"));
        var logits = new float[bytes.Length / sizeof(float)];
        Buffer.BlockCopy(bytes, 0, logits, 0, bytes.Length);
        return logits;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// Parity with an independent implementation: TorchSharp and the exported ONNX graph give the PyTorch reference's logits
/// for a folder the reference wrote (random non-zero biases, both residual layouts, partial and full rotary).
/// </summary>
[Collection(TorchCollection.Name)]
public class PyTorchReferenceTests(PyTorchReferenceModels models) : IClassFixture<PyTorchReferenceModels>
{
    static void Close(float[] expected, float[] actual, float tolerance, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        float worst = 0;
        int at = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            float diff = Math.Abs(expected[i] - actual[i]);
            if (!(diff <= worst)) (worst, at) = (diff, i);
        }
        int vocab = PyTorchReferenceModels.Vocab, seq = PyTorchReferenceModels.Ids[0].Length;
        Assert.True(worst <= tolerance, $"{what}: max |ours − PyTorch| = {worst} > {tolerance} " +
            $"(row {at / (seq * vocab)}, position {at / vocab % seq}, token {at % vocab}: PyTorch {expected[at]}, ours {actual[at]})");
    }

    [Theory]
    [InlineData(true, 0.25)]
    [InlineData(false, 0.25)]
    [InlineData(true, 1.0)]
    [InlineData(false, 1.0)]
    public void TorchSharpAndOnnxRuntimeGiveTheReferenceLogits(bool parallel, double rotaryPct)
    {
        string folder = models.Folder(parallel, rotaryPct);
        float[] expected = PyTorchReferenceModels.ReferenceLogits(folder);
        long[][] rows = PyTorchReferenceModels.Ids;
        long[] ids = rows.SelectMany(r => r).ToArray();
        int batch = rows.Length, seq = rows[0].Length;
        Assert.Equal(batch * seq * PyTorchReferenceModels.Vocab, expected.Length);

        var (model, _) = HfCheckpoint.Load(folder, CPU);
        using (model)
        using (no_grad())
        {
            Assert.Equal(parallel, model.Config.UseParallelResidual);
            Assert.Equal(rotaryPct, model.Config.RotaryPct);
            model.eval();
            using var logits = model.forward(tensor(ids, [batch, seq]));
            Close(expected, logits.data<float>().ToArray(), 1e-5f, "TorchSharp");
        }

        using var ort = OnnxCausalLM.Load(OnnxExporter.Export(folder), "cpu", threads: 1);
        long[] positions = rows.SelectMany(r => Enumerable.Range(0, r.Length).Select(p => (long)p)).ToArray();
        var (ortLogits, cache) = ort.Forward(ids, positions, Enumerable.Repeat(1L, ids.Length).ToArray(), batch, null);
        foreach (var v in cache) v.Dispose();
        Close(expected, ortLogits, 1e-4f, "ONNX Runtime");
    }
}
