using System.Collections.Concurrent;
using System.ComponentModel;
using System.Diagnostics;

namespace MLNetFinetune.Tests;

/// <summary>
/// The Python that the independent checks run (the PyTorch reference, Jinja2 for chat templates, the tokenizer
/// reference): Debian's interpreter, which sees the Debian packages .ci/run installs (python3-torch, python3-jinja2,
/// python3-regex, python3-sentencepiece); a python3 earlier on PATH (pyenv, a venv) does not. Plain python3 where there
/// is no /usr/bin/python3.
/// </summary>
static class DebianPython
{
    public static string Path { get; } = File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";

    static readonly ConcurrentDictionary<string, string?> Checked = new();

    /// <summary>Why tests needing these modules cannot run (what to install), or null when Python imports them all.</summary>
    public static string? Missing(params string[] modules) => Checked.GetOrAdd(string.Join(",", modules), _ =>
    {
        string install = $"needs Debian's {string.Join(" ", modules.Select(m => $"python3-{m}"))} for {Path} " +
            $"(apt-get install -y {string.Join(" ", modules.Select(m => $"python3-{m}"))}; .ci/run installs them)";
        try
        {
            using var process = Process.Start(new ProcessStartInfo(Path, ["-c", $"import {string.Join(", ", modules)}"])
            { RedirectStandardOutput = true, RedirectStandardError = true })!;
            process.StandardError.ReadToEnd();
            process.WaitForExit();
            return process.ExitCode == 0 ? null : install;
        }
        catch (Win32Exception e)
        {
            return $"{install}: {e.Message}";
        }
    });
}

/// <summary>A fact checked against a Python reference: skipped, saying what to install, where Python lacks the modules.</summary>
public sealed class PythonFactAttribute : FactAttribute
{
    public PythonFactAttribute(params string[] modules) => Skip = DebianPython.Missing(modules);
}

/// <summary>A theory checked against a Python reference: skipped, saying what to install, where Python lacks the modules.</summary>
public sealed class PythonTheoryAttribute : TheoryAttribute
{
    public PythonTheoryAttribute(params string[] modules) => Skip = DebianPython.Missing(modules);
}
