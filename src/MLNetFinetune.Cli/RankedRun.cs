using MLNetFinetune.Distributed;

namespace MLNetFinetune.Cli;

/// <summary>
/// Runs a verb as one rank of a job when a launcher (<c>mpirun -np N</c>, <c>srun</c>) started several copies of it: joins
/// the MPI group, lets rank 0 alone speak, and when a rank fails stops every rank at once (MPI_Abort) rather than leaving
/// the others waiting for it. A single process runs the verb as it is.
/// </summary>
static class RankedRun
{
    public static int Run(TextWriter output, TimeSpan timeout, Func<IProcessGroup?, TextWriter, int> verb)
    {
        if (LaunchEnvironment.WorldSize <= 1) return verb(null, output);
        using var group = MpiProcessGroup.Join(timeout);
        if (group.WorldSize != LaunchEnvironment.WorldSize)
            throw new InvalidOperationException($"The {LaunchEnvironment.Launcher} launch says {LaunchEnvironment.WorldSize} processes but MPI sees {group.WorldSize}: " +
                "on CPU, start the ranks with an MPI launcher (mpirun -np N, or srun with PMIx), which connects them.");
        if (group.Rank == 0) output.WriteLine($"{group.WorldSize} ranks ({LaunchEnvironment.Launcher} launch, {group.Backend})");
        try
        {
            return verb(group, group.Rank == 0 ? output : TextWriter.Null);
        }
        catch (Exception e)
        {
            group.Abort(e.Message); // does not return: every rank stops now
            throw;
        }
    }
}
