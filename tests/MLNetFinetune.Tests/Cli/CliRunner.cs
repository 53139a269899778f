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
}
