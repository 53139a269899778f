namespace MLNetFinetune.Benchmarks;

/// <summary>Peak resident set size from /proc (Linux): the number the kernel enforces, not the GC's view.</summary>
static class ProcessMemory
{
    /// <summary>Resets the peak (VmHWM) to the current RSS, so setup work does not count.</summary>
    public static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");

    /// <summary>Peak RSS in MiB since start or the last reset, of this process or of process <paramref name="pid"/>.</summary>
    public static double PeakRssMb(int? pid = null) => StatusMb(pid, "VmHWM:");

    /// <summary>RSS now, in MiB.</summary>
    public static double RssMb(int? pid = null) => StatusMb(pid, "VmRSS:");

    static double StatusMb(int? pid, string field)
    {
        string status = $"/proc/{pid?.ToString() ?? "self"}/status";
        foreach (string line in File.ReadLines(status))
            if (line.StartsWith(field, StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0;
        throw new InvalidOperationException($"{status} has no {field} line");
    }
}
