namespace MLNetFinetune.Tests;

/// <summary>
/// The Python that the independent checks run (the PyTorch reference, Jinja2 for chat templates): Debian's interpreter,
/// which sees the Debian packages .ci/run installs (python3-torch, python3-jinja2); a python3 earlier on PATH (pyenv, a
/// venv) does not. Plain python3 where there is no /usr/bin/python3.
/// </summary>
static class DebianPython
{
    public static string Path { get; } = File.Exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}
