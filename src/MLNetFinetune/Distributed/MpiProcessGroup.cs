namespace MLNetFinetune.Distributed;

/// <summary>
/// The ranks an MPI launcher started (<c>mpirun -np N</c>, <c>srun</c> under Slurm), with collectives through Open MPI on
/// CPU memory. Every collective is watched: one that waits longer than the timeout (a rank died or stalls) ends this
/// rank with a message instead of hanging.
/// </summary>
public sealed unsafe class MpiProcessGroup : IProcessGroup
{
    // MPI counts are C ints: larger buffers go in chunks. 2^28 elements (1 GiB of floats) keeps every count in range.
    const int MaxChunk = 1 << 28;

    readonly Mpi.Api _api;
    readonly CollectiveWatchdog _watchdog;
    bool _disposed;

    MpiProcessGroup(TimeSpan timeout)
    {
        Mpi.Initialize();
        _api = Mpi.Functions;
        int rank, size, version, subversion;
        Mpi.Check(_api.CommRank(_api.CommWorld, &rank), "MPI_Comm_rank");
        Mpi.Check(_api.CommSize(_api.CommWorld, &size), "MPI_Comm_size");
        Mpi.Check(_api.GetVersion(&version, &subversion), "MPI_Get_version");
        (Rank, WorldSize) = (rank, size);
        Backend = $"MPI {version}.{subversion} ({_api.Library})";
        Timeout = timeout;
        _watchdog = new CollectiveWatchdog(timeout, rank);
    }

    /// <summary>The default collective timeout: 5 minutes (a checkpoint written by rank 0 is waited for at the next collective).</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromMinutes(5);

    /// <summary>
    /// Joins the job the launcher started (initialising MPI once per process); <paramref name="timeout"/> bounds every
    /// collective. Fails saying what to install when Open MPI is missing.
    /// </summary>
    public static MpiProcessGroup Join(TimeSpan? timeout = null) => new(timeout ?? DefaultTimeout);

    /// <inheritdoc />
    public int Rank { get; }

    /// <inheritdoc />
    public int WorldSize { get; }

    /// <inheritdoc />
    public string Backend { get; }

    /// <summary>How long a collective may wait before this rank gives up on the others.</summary>
    public TimeSpan Timeout { get; }

    /// <inheritdoc />
    public void AllReduceSum(nint buffer, long count, CollectiveType type, string what)
    {
        var (datatype, size) = Type(type);
        using var _ = _watchdog.Arm(what);
        for (long done = 0; done < count; done += MaxChunk)
        {
            int n = (int)Math.Min(MaxChunk, count - done);
            Mpi.Check(_api.Allreduce(_api.InPlaceBuffer, buffer + (nint)(done * size), n, datatype, _api.Sum, _api.CommWorld), "MPI_Allreduce");
        }
    }

    /// <inheritdoc />
    public void Broadcast(nint buffer, long bytes, int root, string what)
    {
        using var _ = _watchdog.Arm(what);
        for (long done = 0; done < bytes; done += MaxChunk)
        {
            int n = (int)Math.Min(MaxChunk, bytes - done);
            Mpi.Check(_api.Bcast(buffer + (nint)done, n, _api.Byte, root, _api.CommWorld), "MPI_Bcast");
        }
    }

    /// <inheritdoc />
    public void Barrier(string what)
    {
        using var _ = _watchdog.Arm(what);
        Mpi.Check(_api.Barrier(_api.CommWorld), "MPI_Barrier");
    }

    /// <inheritdoc />
    public void Abort(string message, int exitCode = 1)
    {
        Console.Out.Flush();
        Console.Error.WriteLine($"error: rank {Rank}: {message}");
        Console.Error.Flush();
        _api.Abort(_api.CommWorld, exitCode); // ends every rank; does not return
    }

    (nint Datatype, int Size) Type(CollectiveType type) => type switch
    {
        CollectiveType.Float32 => (_api.Float, 4),
        CollectiveType.Float64 => (_api.Double, 8),
        CollectiveType.Int64 => (_api.Int64, 8),
        _ => throw new ArgumentOutOfRangeException(nameof(type), type, null),
    };

    /// <summary>Finalises MPI after a last barrier (so no rank leaves while another still writes); MPI cannot start again in this process.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Barrier("the barrier before MPI_Finalize");
        _watchdog.Dispose();
        Mpi.FinalizeOnce();
    }
}
