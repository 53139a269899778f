using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MLNetFinetune.Distributed;

/// <summary>
/// Ends a process whose collective has waited longer than the timeout, as PyTorch's NCCL watchdog does: a rank that died
/// or stalls leaves the others blocked inside MPI or NCCL for ever, and no call of theirs can be cancelled, so a thread
/// beside them says what was waited for and exits the process (the launcher then ends the rest of the job).
/// </summary>
sealed class CollectiveWatchdog : IDisposable
{
    /// <summary>The exit code of a process the watchdog ends.</summary>
    public const int TimedOutExitCode = 3;

    readonly TimeSpan _timeout;
    readonly int _rank;
    readonly Thread _thread;
    readonly object _gate = new();
    string? _waitingFor;
    long _armedAt;
    bool _disposed;

    public CollectiveWatchdog(TimeSpan timeout, int rank)
    {
        _timeout = timeout;
        _rank = rank;
        _thread = new Thread(Watch) { IsBackground = true, Name = "collective watchdog" };
        _thread.Start();
    }

    /// <summary>Watches one collective until the returned scope is disposed.</summary>
    public Scope Arm(string what)
    {
        lock (_gate)
        {
            _waitingFor = what;
            _armedAt = Stopwatch.GetTimestamp();
        }
        return new Scope(this);
    }

    public readonly struct Scope(CollectiveWatchdog owner) : IDisposable
    {
        public void Dispose()
        {
            lock (owner._gate) owner._waitingFor = null;
        }
    }

    void Watch()
    {
        var poll = TimeSpan.FromMilliseconds(Math.Clamp(_timeout.TotalMilliseconds / 10, 10, 500));
        while (true)
        {
            lock (_gate)
            {
                if (_disposed) return;
                if (_waitingFor != null && Stopwatch.GetElapsedTime(_armedAt) > _timeout)
                {
                    Console.Out.Flush();
                    Console.Error.WriteLine($"error: rank {_rank}: {_waitingFor} did not complete within {_timeout.TotalSeconds:0.#} s; another rank has probably died or stalled. " +
                        "Stopping this rank (raise the collective timeout if a step or a checkpoint legitimately takes longer).");
                    Console.Error.Flush();
                    Exit(TimedOutExitCode);
                }
                Monitor.Wait(_gate, poll);
            }
        }
    }

    // _exit, not Environment.Exit: the main thread is blocked inside a native collective, and Environment.Exit would wait
    // for it (finalizers, ProcessExit handlers), which is the hang this class exists to end.
    [DllImport("libc.so.6", EntryPoint = "_exit")]
    static extern void Exit(int status);

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            Monitor.PulseAll(_gate);
        }
        _thread.Join();
    }
}
