using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.TorchSharp;

/// <summary>
/// A checkpoint replaces the one at its path only once it is whole; a failed write leaves the old one as it was; the
/// folders a killed run leaves half-written are never resumed from and are cleaned up.
/// </summary>
[Collection(TorchCollection.Name)]
public class CheckpointFilesTests : IDisposable
{
    static readonly Lazy<TextTokenizer> Tokenizer = new(() => TestTokenizers.Small());
    readonly TempDirectory _dir = new();
    readonly TransformerForCausalLM _model;
    readonly global::TorchSharp.Modules.AdamW _optimizer;

    public CheckpointFilesTests()
    {
        manual_seed(0);
        _model = new TransformerForCausalLM(ModelConfig.Preset("tiny", 320));
        _optimizer = optim.AdamW(_model.parameters(), 1e-3);
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        _model.Dispose();
        _dir.Dispose();
    }

    static TrainerState State(int step, double? bestEvalLoss = null) =>
        new(step, 10, 0, step * 4, step * 64, bestEvalLoss, 0, 0, true, TrainingCheckpoint.CaptureRng(), []);

    static Dictionary<string, byte[]> Files(string dir) =>
        Directory.GetFiles(dir).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

    [Fact]
    public void WritingOverACheckpointReplacesItWhole()
    {
        string step = Path.Combine(_dir.Path, "step-0000002");
        TrainingCheckpoint.Write(step, _model, Tokenizer.Value, _optimizer, State(2));
        File.WriteAllText(Path.Combine(step, "stale.txt"), "from an earlier write");

        TrainingCheckpoint.Write(step, _model, Tokenizer.Value, _optimizer, State(3));

        Assert.Equal(3, TrainingCheckpoint.ReadState(step).Step);
        Assert.False(File.Exists(Path.Combine(step, "stale.txt")));
        Assert.Equal([step], Directory.GetDirectories(_dir.Path)); // no .tmp- or .old- folder beside it
    }

    [Fact]
    public void AFailedWriteLeavesTheCheckpointThereAsItWas()
    {
        string step = Path.Combine(_dir.Path, "step-0000002");
        TrainingCheckpoint.Write(step, _model, Tokenizer.Value, _optimizer, State(2));
        var before = Files(step);

        // The weights and the optimizer are written, then the state cannot be (NaN is not JSON): the write fails last.
        Assert.Throws<ArgumentException>(() => TrainingCheckpoint.Write(step, _model, Tokenizer.Value, _optimizer, State(3, double.NaN)));

        Assert.Equal(before, Files(step));
        Assert.Equal([step], Directory.GetDirectories(_dir.Path));
    }

    [Fact]
    public void HalfWrittenCheckpointsAreNeverResumedAndArePruned()
    {
        string folder = TrainingCheckpoint.Folder(_dir.Path);
        foreach (int s in new[] { 2, 4, 6 })
            TrainingCheckpoint.Write(Path.Combine(folder, $"step-{s:D7}"), _model, Tokenizer.Value, _optimizer, State(s));
        // What a run killed mid-write leaves: a newer step still being written, and an old one being swapped out.
        Directory.CreateDirectory(Path.Combine(folder, "step-0000008.tmp-abc12345"));
        File.WriteAllText(Path.Combine(folder, "step-0000008.tmp-abc12345", TrainingCheckpoint.StateFile), "{\"step\": 8");
        Directory.CreateDirectory(Path.Combine(folder, "step-0000006.old-def67890"));

        Assert.Equal(Path.Combine(folder, "step-0000006"), TrainingCheckpoint.Resolve(_dir.Path));

        TrainingCheckpoint.Prune(_dir.Path, keep: 2);
        Assert.Equal(["step-0000004", "step-0000006"], Directory.GetDirectories(folder).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }
}
