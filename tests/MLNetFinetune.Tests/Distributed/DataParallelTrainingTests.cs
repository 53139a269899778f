using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using MLNetFinetune.Tests.TokenShards;

namespace MLNetFinetune.Tests.Distributed;

/// <summary>
/// Data-parallel pretraining as a cluster runs it: <c>mpirun -np 2</c> over the CLI. Two ranks with half the micro-batch
/// each must follow one process with the whole batch step by step, and a rank that dies or stalls must end the job.
/// </summary>
[Collection(TorchCollection.Name)]
public class DataParallelTrainingTests(ShardCorpus corpus) : IClassFixture<ShardCorpus>, IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static readonly string Cli = Path.Combine(AppContext.BaseDirectory, "mlnet-finetune.dll");

    static string[] Pretrain(string output, int steps, int batch, string? shards = null) =>
    [
        "pretrain", .. shards == null ? ["--corpus", RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst")] : new[] { "--shards", shards },
        "--tokenizer", RepoPaths.Of("models", "facts-base"),
        "--preset", "tiny", "--steps", steps.ToString(CultureInfo.InvariantCulture), "--lr", "3e-3", "--threads", "1", "--device", "cpu",
        "--block-size", "64", "--batch-size", batch.ToString(CultureInfo.InvariantCulture), "--eval-fraction", "0.1", "--seed", "1",
        "--log-interval", "1", "--out", output,
    ];

    [MpiFact]
    public void TwoRanksMatchOneProcessWithTheSameGlobalBatchStepByStep()
    {
        string alone = Path.Combine(_dir.Path, "alone"), ranks = Path.Combine(_dir.Path, "ranks");
        var single = Launch.Run("dotnet", [Cli, .. Pretrain(alone, 20, batch: 4)], TimeSpan.FromMinutes(3));
        Assert.True(single.ExitCode == 0, single.Output);
        var parallel = Launch.Mpi(2, [Cli, .. Pretrain(ranks, 20, batch: 2)], TimeSpan.FromMinutes(3));
        Assert.True(parallel.ExitCode == 0, parallel.Output);

        Assert.Contains("2 ranks (Open MPI launch, MPI 3.1", parallel.Output, StringComparison.Ordinal);
        Assert.Single(parallel.Output.Split('\n'), l => l.StartsWith("step 20/20", StringComparison.Ordinal)); // rank 0 alone reports
        var expected = Losses(alone);
        var actual = Losses(ranks);
        Assert.Equal(20, expected.Count);
        Assert.Equal(expected.Keys, actual.Keys);
        foreach (var (step, loss) in expected)
            Assert.True(Math.Abs(loss - actual[step]) <= 1e-5, $"step {step}: one process {loss}, two ranks {actual[step]}");
        Assert.True(expected[20] < expected[1] - 0.5, "the loss falls, so the comparison is of a run that learns");

        Assert.True(File.Exists(Path.Combine(ranks, "model", "model.safetensors")), "rank 0 writes the final model");
    }

    [MpiFact]
    public void TwoRanksFinetuneAsOneProcessOnPairsOfMixedLengths()
    {
        // Pairs pad to different lengths per micro-batch and rank: the loss must still weigh every answer token the same.
        string[] Finetune(string output, int batch) =>
        [
            Cli, "finetune", "--pairs", RepoPaths.Of("examples", "data", "facts", "train.jsonl"), "--base", RepoPaths.Of("models", "facts-base"),
            "--steps", "8", "--lr", "5e-4", "--threads", "1", "--device", "cpu", "--batch-size", batch.ToString(CultureInfo.InvariantCulture),
            "--log-interval", "1", "--eval-fraction", "0", "--out", output,
        ];
        string alone = Path.Combine(_dir.Path, "finetune-alone"), ranks = Path.Combine(_dir.Path, "finetune-ranks");
        var single = Launch.Run("dotnet", Finetune(alone, 8), TimeSpan.FromMinutes(3));
        Assert.True(single.ExitCode == 0, single.Output);
        var parallel = Launch.Mpi(2, Finetune(ranks, 4), TimeSpan.FromMinutes(3));
        Assert.True(parallel.ExitCode == 0, parallel.Output);
        Assert.Contains("gradient all-reduce: ", parallel.Output, StringComparison.Ordinal);
        var expected = Losses(alone);
        Assert.Equal(8, expected.Count);
        foreach (var (step, loss) in Losses(ranks))
            Assert.True(Math.Abs(loss - expected[step]) <= 1e-5, $"step {step}: one process {expected[step]}, two ranks {loss}");
        Assert.True(File.Exists(Path.Combine(ranks, "model", "model.safetensors")), "rank 0 writes the finetuned model");
    }

    [MpiFact]
    public void TokenizeUnderMpirunSplitsTheFilesAndTwoRanksPretrainOnTheShardsAsOneProcess()
    {
        string[] Tokenize(string output) => [Cli, "tokenize", "--corpus", corpus.Folder, "--tokenizer", RepoPaths.Of("models", "facts-base"), "--out", output];
        string alone = Path.Combine(_dir.Path, "shards-alone"), ranks = Path.Combine(_dir.Path, "shards-ranks");
        var single = Launch.Run("dotnet", Tokenize(alone), TimeSpan.FromMinutes(2));
        Assert.True(single.ExitCode == 0, single.Output);
        var mapped = Launch.Mpi(2, Tokenize(ranks), TimeSpan.FromMinutes(2));
        Assert.True(mapped.ExitCode == 0, mapped.Output);
        // Map-only: input i to rank i mod 2, each rank writing its own; the shards are the one-process run's, byte for byte.
        Assert.Contains("rank 0/2 (Open MPI): 2 shards written", mapped.Output, StringComparison.Ordinal);
        Assert.Contains("rank 1/2 (Open MPI): 2 shards written", mapped.Output, StringComparison.Ordinal);
        static IEnumerable<string> Checksums(string folder) =>
            JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "manifest.json")))!["shards"]!.AsArray().Select(x => $"{x!["name"]} {x["bin_sha256"]} {x["idx_sha256"]}");
        Assert.Equal(Checksums(alone), Checksums(ranks));
        Assert.Equal(4, Checksums(ranks).Count());

        string one = Path.Combine(_dir.Path, "one"), two = Path.Combine(_dir.Path, "two");
        var trainedAlone = Launch.Run("dotnet", [Cli, .. Pretrain(one, 12, batch: 4, shards: ranks)], TimeSpan.FromMinutes(3));
        Assert.True(trainedAlone.ExitCode == 0, trainedAlone.Output);
        var trainedRanks = Launch.Mpi(2, [Cli, .. Pretrain(two, 12, batch: 2, shards: ranks)], TimeSpan.FromMinutes(3));
        Assert.True(trainedRanks.ExitCode == 0, trainedRanks.Output);
        var expected = Losses(one);
        Assert.Equal(12, expected.Count);
        foreach (var (step, loss) in Losses(two))
            Assert.True(Math.Abs(loss - expected[step]) <= 1e-5, $"step {step}: one process {loss}, two ranks {expected[step]}");
    }

    [MpiFact]
    public void ATwoRankRunResumedFromItsMiddleCheckpointEndsAsTheUninterruptedRun()
    {
        string whole = Path.Combine(_dir.Path, "whole"), resumed = Path.Combine(_dir.Path, "resumed");
        var uninterrupted = Launch.Mpi(2, [Cli, .. Pretrain(whole, 12, batch: 2), "--checkpoint-interval", "6"], TimeSpan.FromMinutes(3));
        Assert.True(uninterrupted.ExitCode == 0, uninterrupted.Output);
        // A run stopped after step 6: only that checkpoint is left, in a run directory of its own.
        string middle = Path.Combine(resumed, "checkpoints", "step-0000006");
        CopyDirectory(Path.Combine(whole, "checkpoints", "step-0000006"), middle);
        var second = Launch.Mpi(2, [Cli, .. Pretrain(resumed, 12, batch: 2), "--checkpoint-interval", "6", "--resume", middle], TimeSpan.FromMinutes(3));
        Assert.True(second.ExitCode == 0, second.Output);
        Assert.DoesNotContain("step 6/12", second.Output, StringComparison.Ordinal); // it continued, rather than trained again
        Assert.Contains("step 7/12", second.Output, StringComparison.Ordinal);
        var expected = Losses(whole);
        var actual = Losses(resumed);
        Assert.Equal(expected.Keys, actual.Keys); // the history travels in the checkpoint
        foreach (var (step, loss) in expected) Assert.Equal(loss, actual[step]);
        Assert.Equal(File.ReadAllBytes(Path.Combine(whole, "model", "model.safetensors")), File.ReadAllBytes(Path.Combine(resumed, "model", "model.safetensors")));
    }

    static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from)) File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        foreach (string dir in Directory.GetDirectories(from)) CopyDirectory(dir, Path.Combine(to, Path.GetFileName(dir)));
    }

    [Fact]
    public void ARankThatCannotReachOpenMpiSaysWhatIsMissing()
    {
        string[] pretrain = [Cli, .. Pretrain(Path.Combine(_dir.Path, "run"), 2, batch: 2)];
        var missing = Launch.Run("dotnet", pretrain, TimeSpan.FromMinutes(1), new() { ["RANK"] = "0", ["WORLD_SIZE"] = "2", ["MLNETFT_MPI_LIBRARY"] = "/nonexistent/libmpi.so.40" });
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("error: Open MPI's library '/nonexistent/libmpi.so.40' could not be loaded (/nonexistent/libmpi.so.40: cannot open shared object file", missing.Output, StringComparison.Ordinal);
        Assert.Contains("apt-get install openmpi-bin libopenmpi-dev", missing.Output, StringComparison.Ordinal);

        var notOpenMpi = Launch.Run("dotnet", pretrain, TimeSpan.FromMinutes(1), new() { ["RANK"] = "0", ["WORLD_SIZE"] = "2", ["MLNETFT_MPI_LIBRARY"] = "libc.so.6" });
        Assert.NotEqual(0, notOpenMpi.ExitCode);
        Assert.Contains("error: 'libc.so.6' does not export ompi_mpi_comm_world: it is not Open MPI", notOpenMpi.Output, StringComparison.Ordinal);
    }

    [MpiFact]
    public void ATorchrunStyleLaunchWithoutAnMpiLauncherIsRefused()
    {
        // RANK/WORLD_SIZE say 2, but nothing connects the processes: MPI starts this one alone (a singleton of 1).
        var alone = Launch.Run("dotnet", [Cli, .. Pretrain(Path.Combine(_dir.Path, "run"), 2, batch: 2)], TimeSpan.FromMinutes(1),
            new() { ["RANK"] = "0", ["WORLD_SIZE"] = "2", ["OMPI_ALLOW_RUN_AS_ROOT"] = "1", ["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1" });
        Assert.NotEqual(0, alone.ExitCode);
        Assert.Contains("error: The torchrun launch says 2 processes but MPI sees 1: on CPU, start the ranks with an MPI launcher", alone.Output, StringComparison.Ordinal);
    }

    [MpiFact]
    public void ResumingWithAnotherWorldSizeIsRefused()
    {
        string run = Path.Combine(_dir.Path, "run");
        var first = Launch.Mpi(2, [Cli, .. Pretrain(run, 6, batch: 2)], TimeSpan.FromMinutes(3));
        Assert.True(first.ExitCode == 0, first.Output);
        var alone = Launch.Run("dotnet", [Cli, .. Pretrain(run, 6, batch: 4), "--resume", run], TimeSpan.FromMinutes(2));
        Assert.NotEqual(0, alone.ExitCode);
        Assert.Contains("written by a run of 2 processes; this one has 1", alone.Output, StringComparison.Ordinal);
    }

    [MpiFact]
    public void AKilledRankEndsTheJobAndAStalledOneIsGivenUpAfterTheTimeout()
    {
        // SIGKILL: the launcher sees the process die and ends the job.
        var killed = RunUntilRankOneIs("KILL", Path.Combine(_dir.Path, "killed"), timeoutSeconds: 300);
        Assert.NotEqual(0, killed.ExitCode);
        Assert.True(killed.Elapsed < TimeSpan.FromSeconds(60), $"the job took {killed.Elapsed} to end after rank 1 was killed");

        // SIGSTOP: nothing dies, rank 0 waits in an all-reduce; its watchdog gives up after the collective timeout.
        var stalled = RunUntilRankOneIs("STOP", Path.Combine(_dir.Path, "stalled"), timeoutSeconds: 5);
        Assert.NotEqual(0, stalled.ExitCode);
        Assert.Contains("error: rank 0: the all-reduce", stalled.Output, StringComparison.Ordinal);
        Assert.Contains("did not complete within 5 s; another rank has probably died or stalled", stalled.Output, StringComparison.Ordinal);
        Assert.True(stalled.Elapsed < TimeSpan.FromSeconds(60), $"the job took {stalled.Elapsed} to end after rank 1 stalled");
    }

    // Step → mean training loss, from the run's metrics.csv.
    static SortedDictionary<int, double> Losses(string run)
    {
        var lines = File.ReadAllLines(Path.Combine(run, "metrics.csv"));
        var header = lines[0].Split(',');
        int step = Array.IndexOf(header, "step"), loss = Array.IndexOf(header, "loss");
        return new(lines.Skip(1).Select(l => l.Split(',')).ToDictionary(f => int.Parse(f[step], CultureInfo.InvariantCulture), f => double.Parse(f[loss], CultureInfo.InvariantCulture)));
    }

    // Starts a long two-rank run, sends rank 1 the signal once rank 0 reports its first step, and waits for mpirun.
    static (int ExitCode, string Output, TimeSpan Elapsed) RunUntilRankOneIs(string signal, string output, int timeoutSeconds)
    {
        using var job = Launch.StartMpi(2, [Cli, .. Pretrain(output, 100_000, batch: 2), "--collective-timeout", timeoutSeconds.ToString(CultureInfo.InvariantCulture)]);
        var text = new StringBuilder();
        var firstStep = new ManualResetEventSlim();
        void Read(string? line)
        {
            if (line == null) return;
            lock (text) text.AppendLine(line);
            if (line.StartsWith("step ", StringComparison.Ordinal)) firstStep.Set();
        }
        job.OutputDataReceived += (_, e) => Read(e.Data);
        job.ErrorDataReceived += (_, e) => Read(e.Data);
        job.BeginOutputReadLine();
        job.BeginErrorReadLine();
        int rankOne = 0;
        try
        {
            Assert.True(firstStep.Wait(TimeSpan.FromMinutes(2)), $"no step reported: {text}");
            rankOne = Launch.RankPid(job.Id, 1);
            Process.Start("kill", [$"-{signal}", rankOne.ToString(CultureInfo.InvariantCulture)])!.WaitForExit();
            var clock = Stopwatch.StartNew();
            Assert.True(job.WaitForExit(TimeSpan.FromSeconds(120)), $"the job still runs 120 s after rank 1 got SIG{signal}: {text}");
            job.WaitForExit(); // drains the output
            lock (text) return (job.ExitCode, text.ToString(), clock.Elapsed);
        }
        finally
        {
            if (!job.HasExited) job.Kill(entireProcessTree: true);
            if (rankOne > 0) Process.Start("kill", ["-KILL", rankOne.ToString(CultureInfo.InvariantCulture)])!.WaitForExit();
        }
    }
}

/// <summary>Runs processes and MPI jobs for the distributed tests.</summary>
static class Launch
{
    // As root (CI containers) Open MPI wants consent; --oversubscribe lets a machine that reports one slot run two ranks.
    static ProcessStartInfo MpiStart(int ranks, IEnumerable<string> command)
    {
        var start = new ProcessStartInfo("mpirun", ["-np", ranks.ToString(CultureInfo.InvariantCulture), "--oversubscribe", "dotnet", .. command])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
        };
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT"] = "1";
        start.Environment["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1";
        return start;
    }

    public static Process StartMpi(int ranks, IEnumerable<string> command) => Process.Start(MpiStart(ranks, command))!;

    public static (int ExitCode, string Output) Mpi(int ranks, IEnumerable<string> command, TimeSpan timeout) => Wait(StartMpi(ranks, command), timeout);

    public static (int ExitCode, string Output) Run(string file, IEnumerable<string> arguments, TimeSpan timeout, Dictionary<string, string>? environment = null)
    {
        var start = new ProcessStartInfo(file, arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var (name, value) in environment ?? []) start.Environment[name] = value;
        return Wait(Process.Start(start)!, timeout);
    }

    static (int ExitCode, string Output) Wait(Process process, TimeSpan timeout)
    {
        using (process)
        {
            var error = process.StandardError.ReadToEndAsync();
            var output = process.StandardOutput.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                process.Kill(entireProcessTree: true);
                throw new TimeoutException($"{process.StartInfo.FileName} {string.Join(' ', process.StartInfo.ArgumentList)} ran past {timeout}: {output.Result}{error.Result}");
            }
            return (process.ExitCode, output.Result + error.Result);
        }
    }

    /// <summary>The process id of rank <paramref name="rank"/> among <paramref name="mpirun"/>'s children (its environment names the rank).</summary>
    public static int RankPid(int mpirun, int rank)
    {
        foreach (string dir in Directory.GetDirectories("/proc"))
        {
            if (!int.TryParse(Path.GetFileName(dir), out int pid)) continue;
            try
            {
                string stat = File.ReadAllText(Path.Combine(dir, "stat"));
                int parent = int.Parse(stat[(stat.LastIndexOf(')') + 2)..].Split(' ')[1], CultureInfo.InvariantCulture);
                if (parent != mpirun) continue;
                if (File.ReadAllText(Path.Combine(dir, "environ")).Split('\0').Contains($"OMPI_COMM_WORLD_RANK={rank}")) return pid;
            }
            catch (IOException) { } // a process that ended meanwhile
            catch (UnauthorizedAccessException) { }
        }
        throw new InvalidOperationException($"mpirun {mpirun} has no child of rank {rank}.");
    }
}

/// <summary>A fact that needs Open MPI's launcher: skipped, saying what to install, where <c>mpirun</c> is missing.</summary>
public sealed class MpiFactAttribute : FactAttribute
{
    public MpiFactAttribute()
    {
        bool found = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(d => File.Exists(Path.Combine(d, "mpirun")));
        if (!found) Skip = "needs Open MPI's mpirun (apt-get install -y openmpi-bin libopenmpi-dev; .ci/run installs it)";
    }
}
