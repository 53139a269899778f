using Microsoft.ML;
using Microsoft.ML.Data;
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

    sealed class IdsRow
    {
        [VectorType] public int[] Ids { get; set; } = [];
    }
}
