using MLNetFinetune.Cli;

namespace MLNetFinetune.Tests.Cli;

/// <summary>Runs the CLI in-process and captures what it writes.</summary>
static class CliRunner
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = CliApp.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    /// <summary>Runs the CLI with <paramref name="input"/> as standard input; the test fails, showing the error output, unless it exits 0.</summary>
    public static string Succeeds(string input, params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        int code = CliApp.Run(args, new StringReader(input), output, error);
        Assert.True(code == 0, $"`{string.Join(' ', args)}` failed: {error}");
        return output.ToString();
    }
}
