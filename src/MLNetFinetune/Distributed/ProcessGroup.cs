using System.Runtime.InteropServices;

namespace MLNetFinetune.Distributed;

/// <summary>The element types collectives reduce.</summary>
public enum CollectiveType
{
    /// <summary>32-bit floats (gradients).</summary>
    Float32,
    /// <summary>64-bit floats (loss sums).</summary>
    Float64,
    /// <summary>64-bit integers (token and target counts).</summary>
    Int64,
}

/// <summary>
/// The processes of one data-parallel job and the collectives between them (MPI on CPU; NCCL on GPUs): every rank calls
/// the same collectives in the same order. Buffers are raw addresses so tensors' memory is reduced in place.
/// </summary>
public interface IProcessGroup : IDisposable
{
    /// <summary>This process's rank, 0 to <see cref="WorldSize"/> − 1.</summary>
    int Rank { get; }

    /// <summary>How many processes take part.</summary>
    int WorldSize { get; }

    /// <summary>What carries the collectives (<c>Open MPI 4.1</c>, …), for logs.</summary>
    string Backend { get; }

    /// <summary>Sums <paramref name="count"/> elements at <paramref name="buffer"/> over all ranks, in place; <paramref name="what"/> names it in a timeout.</summary>
    void AllReduceSum(nint buffer, long count, CollectiveType type, string what);

    /// <summary>Copies <paramref name="bytes"/> bytes at <paramref name="buffer"/> from rank <paramref name="root"/> to every rank.</summary>
    void Broadcast(nint buffer, long bytes, int root, string what);

    /// <summary>Waits until every rank has arrived.</summary>
    void Barrier(string what);

    /// <summary>Stops every rank of the job at once (this one with <paramref name="exitCode"/>), after <paramref name="message"/> went to standard error.</summary>
    void Abort(string message, int exitCode = 1);
}

/// <summary>Span conveniences over <see cref="IProcessGroup"/>'s raw collectives.</summary>
public static class ProcessGroupExtensions
{
    /// <summary>Sums the values over all ranks, in place.</summary>
    public static unsafe void AllReduceSum(this IProcessGroup group, Span<double> values, string what)
    {
        fixed (double* p = values) group.AllReduceSum((nint)p, values.Length, CollectiveType.Float64, what);
    }

    /// <summary>Sums the values over all ranks, in place.</summary>
    public static unsafe void AllReduceSum(this IProcessGroup group, Span<long> values, string what)
    {
        fixed (long* p = values) group.AllReduceSum((nint)p, values.Length, CollectiveType.Int64, what);
    }

    /// <summary>Gives every rank rank <paramref name="root"/>'s bytes.</summary>
    public static unsafe void Broadcast(this IProcessGroup group, Span<byte> bytes, int root, string what)
    {
        fixed (byte* p = bytes) group.Broadcast((nint)p, bytes.Length, root, what);
    }

    /// <summary>
    /// Fails on every rank, naming the ranks that differ, unless all ranks hold the same <paramref name="digest"/> of
    /// <paramref name="what"/> (weights after the broadcast, the data's block count…).
    /// </summary>
    public static void RequireSame(this IProcessGroup group, ReadOnlySpan<byte> digest, string what)
    {
        // Each rank writes its digest into its own slot of a zeroed table; a sum then gives every rank the whole table.
        var table = new long[group.WorldSize * ((digest.Length + 7) / 8)];
        int width = table.Length / group.WorldSize;
        digest.CopyTo(MemoryMarshal.AsBytes(table.AsSpan(group.Rank * width, width)));
        group.AllReduceSum(table, $"comparing {what}");
        var differing = Enumerable.Range(0, group.WorldSize).Where(r => !table.AsSpan(r * width, width).SequenceEqual(table.AsSpan(0, width))).ToList();
        if (differing.Count > 0)
            throw new InvalidOperationException($"Rank{(differing.Count > 1 ? "s" : "")} {string.Join(", ", differing)} of {group.WorldSize} {(differing.Count > 1 ? "hold" : "holds")} different {what} from rank 0.");
    }
}
