using System.Diagnostics;
using System.Text.Json.Nodes;

namespace MLNetFinetune.Tests.Tokenization;

/// <summary>
/// Runs tests/reference/tokenizer_reference.py (Hugging Face's byte-level BPE written out in Python, and Google's
/// SentencePiece) on a list of jobs, one process for them all. Tests that use it are <see cref="PythonFactAttribute"/>s.
/// </summary>
static class TokenizerReference
{
    public static JsonArray Run(string directory, JsonArray jobs)
    {
        string jobsPath = Path.Combine(directory, $"jobs-{Guid.NewGuid():N}.json");
        File.WriteAllText(jobsPath, jobs.ToJsonString());
        var start = new ProcessStartInfo(DebianPython.Path, [RepoPaths.Of("tests", "reference", "tokenizer_reference.py"), jobsPath])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        string error = process.StandardError.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"tokenizer_reference.py exited with {process.ExitCode}:\n{error}");
        return JsonNode.Parse(output.Result)!.AsArray();
    }

    public static int[][] Rows(JsonNode? node) => node!.AsArray().Select(row => row!.AsArray().Select(id => id!.GetValue<int>()).ToArray()).ToArray();

    static readonly System.Text.Json.JsonSerializerOptions Relaxed = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Equal id lists, or a failure naming the text and the first place they part.</summary>
    public static void Same(IReadOnlyList<int> expected, IReadOnlyList<int> actual, string text, string what)
    {
        int at = 0;
        while (at < expected.Count && at < actual.Count && expected[at] == actual[at]) at++;
        if (at == expected.Count && at == actual.Count) return;
        Assert.Fail($"{what}: ids differ from position {at} for {System.Text.Json.JsonSerializer.Serialize(text, Relaxed)}\n" +
            $"  reference [{string.Join(", ", expected)}]\n  ours      [{string.Join(", ", actual)}]");
    }
}
