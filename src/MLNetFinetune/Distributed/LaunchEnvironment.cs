namespace MLNetFinetune.Distributed;

/// <summary>
/// This process's place in a multi-process launch, read from the variables the launchers set: Open MPI's mpirun
/// (<c>OMPI_COMM_WORLD_RANK</c>/<c>_SIZE</c>/<c>_LOCAL_RANK</c>), MPICH's Hydra (<c>PMI_RANK</c>/<c>PMI_SIZE</c>,
/// <c>MPI_LOCALRANKID</c>), Slurm's srun (<c>SLURM_PROCID</c>/<c>SLURM_NTASKS</c>/<c>SLURM_LOCALID</c>) and torchrun
/// (<c>RANK</c>/<c>WORLD_SIZE</c>/<c>LOCAL_RANK</c>), the first found in that order (mpirun inside a Slurm allocation
/// also inherits Slurm's variables; its own are the ones that count). Without any: rank 0 of 1. Tokenizing and training
/// both stripe work by these, so one launch line serves both.
/// </summary>
public static class LaunchEnvironment
{
    static readonly (string Launcher, string Rank, string Size, string LocalRank)[] Launchers =
    [
        ("Open MPI", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
        ("MPICH (PMI)", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
        ("Slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
        ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ];

    static readonly Lazy<LaunchInfo> Current = new(() => Detect(Environment.GetEnvironmentVariable));

    /// <summary>This process's rank, 0 … <see cref="WorldSize"/> − 1.</summary>
    public static int Rank => Current.Value.Rank;

    /// <summary>How many processes the launcher started.</summary>
    public static int WorldSize => Current.Value.WorldSize;

    /// <summary>The rank among the processes on this machine (which GPU to take); the rank itself when the launcher does not say.</summary>
    public static int LocalRank => Current.Value.LocalRank;

    /// <summary>Which launcher's variables were read (<c>Open MPI</c>, <c>MPICH (PMI)</c>, <c>Slurm</c>, <c>torchrun</c>), or <c>none</c>.</summary>
    public static string Launcher => Current.Value.Launcher;

    /// <summary>
    /// Reads the launch from <paramref name="variable"/> (a name → value lookup, as <see cref="Environment.GetEnvironmentVariable(string)"/>).
    /// A rank outside its world, or a value that is not a number, fails naming the variables.
    /// </summary>
    public static LaunchInfo Detect(Func<string, string?> variable)
    {
        ArgumentNullException.ThrowIfNull(variable);
        foreach (var (launcher, rankName, sizeName, localName) in Launchers)
        {
            string? rankText = variable(rankName), sizeText = variable(sizeName);
            if (rankText == null || sizeText == null) continue;
            int rank = Parse(rankName, rankText), size = Parse(sizeName, sizeText);
            int local = variable(localName) is { } localText ? Parse(localName, localText) : rank;
            if (size < 1 || rank >= size)
                throw new InvalidOperationException($"{launcher} launch: {rankName}={rankText} is not a rank of {sizeName}={sizeText}.");
            return new LaunchInfo(launcher, rank, size, local);
        }
        return new LaunchInfo("none", 0, 1, 0);
    }

    static int Parse(string name, string text) => int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int value)
        ? value
        : throw new InvalidOperationException($"Environment variable {name}='{text}' is not a non-negative integer.");
}

/// <summary>One process's place in a launch.</summary>
/// <param name="Launcher">Which launcher's variables were read, or <c>none</c>.</param>
/// <param name="Rank">The process's rank.</param>
/// <param name="WorldSize">How many processes were launched.</param>
/// <param name="LocalRank">The rank among this machine's processes.</param>
public sealed record LaunchInfo(string Launcher, int Rank, int WorldSize, int LocalRank);
