using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace MLNetFinetune.TokenShards;

/// <summary>Catalog entry points of the token-shard stage: <c>ml.Data.WriteTokenShards(...)</c>, <c>ml.Data.LoadTokenShards(...)</c>.</summary>
public static class MLContextTokenShardExtensions
{
    /// <summary>Tokenizes this rank's share of a corpus into Megatron shards (<see cref="TokenShardWriter.Write"/>); the run's summary goes to the ML.NET log.</summary>
    public static TokenShardRunReport WriteTokenShards(this DataOperationsCatalog catalog, TokenShardOptions options)
    {
        var report = TokenShardWriter.Write(options);
        if (Data.MLContextDataExtensions.GetEnvironment(catalog) is { } log)
        {
            using var channel = log.Start("TokenShards");
            channel.Info(MessageSensitivity.None, report.ToString());
        }
        return report;
    }

    /// <summary>
    /// Opens token shards (a folder with <c>manifest.json</c>, or one shard's prefix) as blocks of
    /// <paramref name="blockSize"/> ids: one row per block in a <see cref="TokenShardDataView.ColumnName"/> column.
    /// </summary>
    public static TokenShardDataView LoadTokenShards(this DataOperationsCatalog catalog, string path, int blockSize) =>
        new(TokenShardDataset.Open(path, blockSize));
}
