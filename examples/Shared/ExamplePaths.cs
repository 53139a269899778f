// Shared by the example programs (linked into each project): where the bundled data and earlier outputs live.
static class ExamplePaths
{
    /// <summary>examples/data, found from the working directory or the program's folder upwards.</summary>
    public static string Data(string file)
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "examples", "data", file);
                if (File.Exists(candidate)) return candidate;
            }
        throw new FileNotFoundException($"Cannot find examples/data/{file} above {Directory.GetCurrentDirectory()}; run from the repository.");
    }

    /// <summary>A bundled model under models/ (e.g. facts-base), found as <see cref="Data"/> finds the data.</summary>
    public static string Model(string name)
    {
        foreach (string start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
            {
                string candidate = Path.Combine(dir.FullName, "models", name);
                if (File.Exists(Path.Combine(candidate, "config.json"))) return candidate;
            }
        throw new DirectoryNotFoundException($"Cannot find models/{name} above {Directory.GetCurrentDirectory()}; run from the repository.");
    }

    /// <summary>An example's output folder under out/, e.g. out/03-Pretrain.</summary>
    public static string Output(string example) => Path.Combine("out", example);

    /// <summary>An earlier example's output, with a clear message when that example has not been run.</summary>
    public static string Earlier(string example, string sub)
    {
        string path = Path.Combine(Output(example), sub);
        if (!Directory.Exists(path))
            throw new DirectoryNotFoundException($"'{path}' does not exist yet: run `dotnet run --project examples/{example} -c Release` first.");
        return path;
    }

    public static void Heading(string title) => Console.WriteLine($"\n=== {title} ===");
}
