using MLNetFinetune.Data;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Tests.TorchSharp;

/// <summary>A damaged <c>trainer_state.json</c> or <c>adapter_config.json</c> names the file and what is wrong.</summary>
public class BadCheckpointFileTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void AMalformedTrainerStateNamesTheFileAndTheLine()
    {
        string state = _dir.File("trainer_state.json", "{\n  \"step\": 3,\n  \"total_steps\": \"many\"\n}");
        var e = Assert.Throws<DataFileException>(() => TrainingCheckpoint.ReadState(_dir.Path));
        Assert.Equal(state, e.FilePath);
        Assert.StartsWith($"{state}:3: malformed trainer state (", e.Message);
        Assert.EndsWith("at $.total_steps)", e.Message);
    }

    [Fact]
    public void ATrainerStateWithoutItsRngStateSaysSo()
    {
        string state = _dir.File("trainer_state.json", "{\"step\": 3, \"total_steps\": 4, \"history\": []}");
        var e = Assert.Throws<DataFileException>(() => TrainingCheckpoint.ReadState(_dir.Path));
        Assert.Equal($"{state}: trainer state has no 'torch_rng_state'", e.Message);
    }

    [Fact]
    public void AMalformedAdapterConfigNamesTheFile()
    {
        string config = _dir.File("adapter_config.json", "{\n  \"r\": 4,\n  \"lora_alpha\": 8,,\n}");
        var e = Assert.Throws<DataFileException>(() => LoraAdapters.ReadOptions(_dir.Path));
        Assert.Equal(config, e.FilePath);
        Assert.StartsWith($"{config}:3: malformed adapter config (", e.Message);
    }

    [Theory]
    [InlineData("{\"lora_alpha\": 8, \"target_modules\": [\"query_key_value\"]}", "no 'r' field")]
    [InlineData("{\"r\": \"four\", \"lora_alpha\": 8, \"target_modules\": [\"query_key_value\"]}", "field 'r' has an unexpected value \"four\"")]
    [InlineData("{\"r\": 4, \"lora_alpha\": 8, \"target_modules\": \"query_key_value\"}", "field 'target_modules' has an unexpected value \"query_key_value\"")]
    public void AnAdapterConfigWithAMissingOrMistypedFieldNamesTheField(string json, string problem)
    {
        string config = _dir.File("adapter_config.json", json);
        var e = Assert.Throws<DataFileException>(() => LoraAdapters.ReadOptions(_dir.Path));
        Assert.StartsWith($"{config}: {problem}", e.Message);
    }
}
