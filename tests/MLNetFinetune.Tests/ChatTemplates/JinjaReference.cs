using System.ComponentModel;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.ChatTemplates;

namespace MLNetFinetune.Tests.ChatTemplates;

/// <summary>A conversation to render: the template, the messages, add_generation_prompt, and other variables as a JSON object.</summary>
public sealed record RenderCase(string Template, IReadOnlyList<ChatTurn> Messages, bool AddGenerationPrompt, string Variables = "{}")
{
    public string Name { get; init; } = "";

    public override string ToString() => $"{Name} [{string.Join(", ", Messages.Select(m => m.Role))}]{(AddGenerationPrompt ? " +generation prompt" : "")}";
}

/// <summary>What Jinja2 produced for a case: the text, or the error it raised.</summary>
public sealed record JinjaResult(string? Text, string? Error, string? ErrorType);

/// <summary>
/// Jinja2 set up as transformers' apply_chat_template sets it up (tests/reference/jinja_chat_template.py, run by Debian's
/// python3 with python3-jinja2), the independent reference our renderer must match byte for byte. One Python process
/// renders a whole batch.
/// </summary>
public static class JinjaReference
{
    const string Install = "Debian's python3-jinja2 is not installed (apt-get install -y python3-jinja2; .ci/run does this)";

    static readonly Lazy<string?> Missing = new(() =>
    {
        try
        {
            using var process = Process.Start(new ProcessStartInfo(DebianPython.Path, ["-c", "import jinja2"]) { RedirectStandardError = true })!;
            process.StandardError.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 ? null : Install;
        }
        catch (Win32Exception e)
        {
            return $"{Install}: {DebianPython.Path}: {e.Message}";
        }
    });

    /// <summary>Why the reference cannot run here, or null when it can.</summary>
    public static string? SkipReason => Missing.Value;

    public static IReadOnlyList<JinjaResult> Render(IReadOnlyList<RenderCase> cases)
    {
        var request = new JsonObject
        {
            ["renders"] = new JsonArray(cases.Select(c => (JsonNode)new JsonObject
            {
                ["template"] = c.Template,
                ["messages"] = new JsonArray(c.Messages.Select(m => (JsonNode)new JsonObject { ["role"] = m.Role, ["content"] = m.Content }).ToArray()),
                ["add_generation_prompt"] = c.AddGenerationPrompt,
                ["variables"] = JsonNode.Parse(c.Variables),
            }).ToArray()),
        };
        var response = Run(request);
        return response["renders"]!.AsArray().Select(r => new JinjaResult(
            r!["text"]?.GetValue<string>(), r["error"]?.GetValue<string>(), r["type"]?.GetValue<string>())).ToList();
    }

    public static IReadOnlyList<string> Strftime(IReadOnlyList<(string Format, DateTime Time)> cases)
    {
        var request = new JsonObject
        {
            ["strftime"] = new JsonArray(cases.Select(c => (JsonNode)new JsonObject { ["format"] = c.Format, ["time"] = c.Time.ToString("s") }).ToArray()),
        };
        return Run(request)["strftime"]!.AsArray().Select(s => s!.GetValue<string>()).ToList();
    }

    static JsonNode Run(JsonObject request)
    {
        var start = new ProcessStartInfo(DebianPython.Path, [RepoPaths.Of("tests", "reference", "jinja_chat_template.py")])
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
            StandardInputEncoding = new UTF8Encoding(false), StandardOutputEncoding = Encoding.UTF8,
        };
        start.Environment["PYTHONIOENCODING"] = "utf-8";
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        process.StandardInput.Write(request.ToJsonString());
        process.StandardInput.Close();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"jinja_chat_template.py exited with {process.ExitCode}: {error.Result}");
        return JsonNode.Parse(output.Result)!;
    }

    /// <summary>Our render of a case: the text, or the ChatTemplateException (any other exception fails the test).</summary>
    public static (string? Text, ChatTemplateException? Error) RenderOurs(RenderCase c)
    {
        try
        {
            var variables = JsonSerializer.Deserialize<Dictionary<string, JsonElement>>(c.Variables)!
                .ToDictionary(p => p.Key, p => (object?)p.Value);
            return (ChatTemplate.Parse(c.Template, c.Name).Render(c.Messages, c.AddGenerationPrompt, variables), null);
        }
        catch (ChatTemplateException e)
        {
            return (null, e);
        }
    }

    /// <summary>
    /// Renders every case with Jinja2 and with ours and asserts the same text (or both failing), listing every mismatch
    /// with its escapes visible.
    /// </summary>
    public static void AssertSameAsJinja(IReadOnlyList<RenderCase> cases)
    {
        var expected = Render(cases);
        var mismatches = new List<string>();
        for (int i = 0; i < cases.Count; i++)
        {
            var (text, error) = RenderOurs(cases[i]);
            var jinja = expected[i];
            if (jinja.Text != null && text != jinja.Text)
                mismatches.Add($"#{i} {cases[i]}:\n  jinja2: {Show(jinja.Text)}\n  ours:   {(error != null ? "error " + error.Message : Show(text!))}");
            else if (jinja.Error != null && error == null)
                mismatches.Add($"#{i} {cases[i]}:\n  jinja2: {jinja.ErrorType}: {jinja.Error}\n  ours:   {Show(text!)}");
        }
        Assert.True(mismatches.Count == 0, $"{mismatches.Count} of {cases.Count} renders differ from Jinja2:\n" + string.Join("\n", mismatches));
    }

    public static string Show(string text) => JsonSerializer.Serialize(text, new JsonSerializerOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
}

/// <summary>A fact that compares with Jinja2; skipped, with the reason shown, where python3-jinja2 is not installed.</summary>
public sealed class JinjaFactAttribute : FactAttribute
{
    public JinjaFactAttribute()
    {
        if (JinjaReference.SkipReason is { } reason) Skip = reason;
    }
}
