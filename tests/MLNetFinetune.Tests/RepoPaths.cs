namespace MLNetFinetune.Tests;

/// <summary>Paths in the repository, found from the test binaries upwards.</summary>
public static class RepoPaths
{
    public static string Root { get; } = FindRoot();

    public static string Of(params string[] parts) => Path.Combine([Root, .. parts]);

    static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir != null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "MLNetFinetune.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"No MLNetFinetune.sln above {AppContext.BaseDirectory}.");
    }
}
