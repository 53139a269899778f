using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Tests.TokenShards;
using MLNetFinetune.TokenShards;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Tests.TorchSharp;

public class TrainingExamplesTests
{
    readonly MLContext _ml = new(seed: 0);

    // Row i holds the ids [i / 64, i % 64], so an example names its row.
    IDataView Rows(int count) => _ml.Data.LoadFromEnumerable(Enumerable.Range(0, count).Select(i => new IdsRow { Ids = [i / 64, i % 64] }).ToList());

    static int[] Order(TrainingExamples examples, int epoch, int seed, int window = 256) =>
        examples.Epoch(epoch, seed, window).Select(e => e.Ids[0] * 64 + e.Ids[1]).ToArray();

    [Fact]
    public void TokenShardBlocksAreHeldOutAndPermutedByIndexAndReadOnlyWhenTaken()
    {
        using var dir = new TempDirectory();
        string shards = Path.Combine(dir.Path, "shards");
        var report = TokenShardWriter.Write(new TokenShardOptions
        {
            Corpus = new CorpusOptions { Path = RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst") }, Tokenizer = ShardCorpus.Tokenizer, OutputDirectory = shards,
        });
        TokenShardManifest.Write(shards, report.Inputs);
        using var view = _ml.Data.LoadTokenShards(shards, blockSize: 16);
        var blocks = Enumerable.Range(0, (int)view.Dataset.BlockCount).Select(i =>
        {
            var ids = new int[16];
            view.Dataset.ReadBlock(i, ids);
            return ids;
        }).ToArray();
        Assert.True(blocks.Length > 60, $"{blocks.Length} blocks");

        var examples = new TrainingExamples(view, TokenShardDataView.ColumnName, null, evalFraction: 0.1, maxEvalExamples: 4, vocabSize: 2048);
        Assert.False(examples.InMemory);
        Assert.True(examples.Permutes(256));
        // Blocks 9, 19, 29, 39 are held out, as rows are from any view; every other block trains once per epoch.
        Assert.Equal([blocks[9], blocks[19], blocks[29], blocks[39]], examples.EvalExamples.Select(e => e.Ids));
        Assert.Equal(blocks.Length - 4, examples.ExamplesPerEpoch);
        string Key(int[] ids) => string.Join(",", ids);
        var training = blocks.Where((_, i) => i is not (9 or 19 or 29 or 39)).Select(Key).Order().ToArray();
        var first = examples.Epoch(0, seed: 0, window: 256).Select(e => Key(e.Ids)).ToArray();
        Assert.Equal(training, first.Order());
        Assert.NotEqual(first, examples.Epoch(1, seed: 0, window: 256).Select(e => Key(e.Ids)));
        Assert.Equal(first, examples.Epoch(0, seed: 0, window: 256).Select(e => Key(e.Ids)));
        Assert.All(examples.Epoch(0, seed: 0, window: 256), e => Assert.Same(e.Ids, e.Labels));
        // A window of 1 keeps data order.
        Assert.Equal(blocks.Where((_, i) => i is not (9 or 19 or 29 or 39)).Select(Key), examples.Epoch(0, seed: 0, window: 1).Select(e => Key(e.Ids)));

        // A model whose vocabulary the shards' ids overflow is refused, naming the block.
        var small = new TrainingExamples(view, TokenShardDataView.ColumnName, null, evalFraction: 0, maxEvalExamples: 0, vocabSize: 8);
        Assert.Contains("outside the model's vocabulary of 8", Assert.Throws<InvalidDataException>(() => small.Epoch(0, 0, 256).ToList()).Message);
    }

    [Fact]
    public void InMemoryDataIsFullyPermutedEveryEpoch()
    {
        var examples = new TrainingExamples(Rows(1000), "Ids", null, evalFraction: 0.1, maxEvalExamples: 20, vocabSize: 64, inMemoryRows: 1000);
        Assert.True(examples.InMemory);
        Assert.True(examples.Permutes(256));
        var held = examples.EvalExamples.Select(e => e.Ids[0] * 64 + e.Ids[1]).ToHashSet();
        var training = Enumerable.Range(0, 1000).Where(i => !held.Contains(i)).ToArray();
        Assert.Equal(980, examples.ExamplesPerEpoch);

        var first = Order(examples, epoch: 0, seed: 0);
        Assert.Equal(training, first.Order());
        Assert.Equal(training, Order(examples, epoch: 1, seed: 0).Order());
        Assert.NotEqual(first, Order(examples, epoch: 1, seed: 0));
        Assert.NotEqual(first, Order(examples, epoch: 0, seed: 1));
        Assert.Equal(first, Order(examples, epoch: 0, seed: 0));
        // Not a window: the first tenth of the epoch already reaches the end of the data.
        Assert.Contains(first[..100], i => i >= 900);
        // A window of 1 keeps data order.
        Assert.Equal(training, Order(examples, epoch: 0, seed: 0, window: 1));
    }

    [Fact]
    public void DataAboveTheLimitStreamsThroughTheWindow()
    {
        var streamed = new TrainingExamples(Rows(1000), "Ids", null, 0, 0, vocabSize: 64, inMemoryRows: 999);
        Assert.False(streamed.InMemory);
        Assert.False(streamed.Permutes(256));
        var order = Order(streamed, epoch: 0, seed: 0, window: 16);
        Assert.Equal(Enumerable.Range(0, 1000), order.Order());
        // A window of 16 can only draw among the first 16 + k rows at position k.
        Assert.All(order.Select((row, k) => (row, k)), p => Assert.True(p.row < 16 + p.k));
        Assert.Equal(order, Order(streamed, epoch: 0, seed: 0, window: 16));
    }

    [Fact]
    public void GroupingByLengthSortsEachGroupOfThePermutationAndKeepsEveryRow()
    {
        // Row i holds i % 7 + 1 copies of the token i % 64, then its number: lengths 2 to 8.
        var rows = _ml.Data.LoadFromEnumerable(Enumerable.Range(0, 300).Select(i => new IdsRow { Ids = [.. Enumerable.Repeat(i % 64, i % 7 + 1), i / 64] }).ToList());
        var examples = new TrainingExamples(rows, "Ids", null, 0, 0, vocabSize: 64, inMemoryRows: 300);
        var plain = examples.Epoch(0, seed: 3, window: 256).ToList();
        var grouped = examples.Epoch(0, seed: 3, window: 256, lengthGroupBatch: 4).ToList();
        string Key(MLNetFinetune.TorchSharp.Training.TrainingExample e) => string.Join(",", e.Ids);
        Assert.Equal(plain.Select(Key).Order(), grouped.Select(Key).Order());
        int group = TrainingExamples.BatchesPerLengthGroup * 4;
        for (int start = 0; start < 300; start += group)
        {
            // The same examples as the permutation's group, longest first.
            Assert.Equal(plain.Skip(start).Take(group).Select(Key).Order(), grouped.Skip(start).Take(group).Select(Key).Order());
            var lengths = grouped.Skip(start).Take(group).Select(e => e.Ids.Length).ToList();
            Assert.Equal(lengths.OrderDescending(), lengths);
        }
        Assert.NotEqual(grouped.Select(Key), examples.Epoch(1, seed: 3, window: 256, lengthGroupBatch: 4).Select(Key));
    }

    sealed class IdsRow
    {
        [VectorType] public int[] Ids { get; set; } = [];
    }
}
