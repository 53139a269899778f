using System.CommandLine;

namespace MLNetFinetune.Cli;

/// <summary>The <c>mlnet-finetune</c> command line: verbs that mirror the pipeline stages, each a thin wrapper over the library.</summary>
public static class CliApp
{
    /// <summary>Parses and runs a command line; errors are one line on <paramref name="error"/> and exit code 1 (<c>--verbose</c> adds the stack trace).</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error) => Run(args, TextReader.Null, output, error);

    /// <summary>Parses and runs a command line; <paramref name="input"/> feeds <c>chat</c>.</summary>
    public static int Run(string[] args, TextReader input, TextWriter output, TextWriter error)
    {
        var verbose = new Option<bool>("--verbose") { Description = "Show stack traces with errors.", Recursive = true };
        var root = new RootCommand("mlnet-finetune: explore data, pretrain, finetune, evaluate, export and generate with small causal language models in .NET.")
        {
            verbose,
            ExploreCommand.Create(output),
            FactsCommand.Create(output),
            TokenizerCommand.Create(output),
            TokenizeCommand.Create(output),
            TrainCommands.Pretrain(output),
            TrainCommands.Finetune(output),
            TrainCommands.Evaluate(output),
            ServeCommands.Export(output),
            ServeCommands.Generate(output),
            ServeCommands.Serve(output),
            ChatCommand.Create(input, output),
            QuickstartCommand.Create(output),
            LessonCommand.Create(output),
            PairsCommand.Create(output),
        };
        var parsed = root.Parse(args);
        try
        {
            return parsed.Invoke(new InvocationConfiguration
            {
                Output = output, Error = error, EnableDefaultExceptionHandler = false,
                // After Ctrl+C or SIGTERM a command gets this long to finish: `serve` lets requests in flight complete.
                ProcessTerminationTimeout = TimeSpan.FromSeconds(40),
            });
        }
        catch (Exception e)
        {
            error.WriteLine(parsed.GetValue(verbose) ? $"error: {e}" : $"error: {e.Message}");
            return 1;
        }
    }
}
