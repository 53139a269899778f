namespace MLNetFinetune.Benchmarks;

/// <summary>Peak resident set size from /proc (Linux): the number the kernel enforces, not the GC's view.</summary>
static class ProcessMemory
{
    /// <summary>Resets the peak (VmHWM) to the current RSS, so setup work does not count.</summary>
    public static void ResetPeak() => File.WriteAllText("/proc/self/clear_refs", "5");

    /// <summary>Peak RSS in MiB since start or the last reset.</summary>
    public static double PeakRssMb()
    {
        foreach (string line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmHWM:", StringComparison.Ordinal))
                return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0;
        throw new InvalidOperationException("/proc/self/status has no VmHWM line");
    }
}
