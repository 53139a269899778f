using System.Diagnostics;

namespace MLNetFinetune.Benchmarks;

/// <summary>The CLI run as users run it, alone or as <c>mpirun</c> ranks: the benchmarks that time whole launches use this.</summary>
static class CliProcess
{
    static string Cli => Path.Combine(AppContext.BaseDirectory, "mlnet-finetune.dll");

    /// <summary>Runs <c>mlnet-finetune</c> with <paramref name="arguments"/> (under <c>mpirun -np ranks</c> when ranks &gt; 1); returns its output, failing with it on a non-zero exit.</summary>
    public static string Run(int ranks, IEnumerable<string> arguments)
    {
        string[] command = ["dotnet", Cli, .. arguments];
        var start = ranks == 1 ? new ProcessStartInfo(command[0], command[1..])
            : new ProcessStartInfo("mpirun", ["-np", $"{ranks}", "--oversubscribe", "--bind-to", "none", .. command]);
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; // CI containers run as root
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        return Output(start, $"mlnet-finetune ({ranks} process(es))");
    }

    /// <summary>Runs a child process to its end and returns its standard output, failing with both outputs on a non-zero exit.</summary>
    public static string Output(ProcessStartInfo start, string what)
    {
        start.RedirectStandardOutput = start.RedirectStandardError = true;
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        string output = process.StandardOutput.ReadToEnd();
        process.WaitForExit();
        if (process.ExitCode != 0) throw new InvalidOperationException($"{what} exited with {process.ExitCode}: {output}{error.Result}");
        return output;
    }
}
