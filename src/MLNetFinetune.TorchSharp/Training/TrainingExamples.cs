using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>One training sequence: token ids and the aligned labels (−100 where no loss is taken).</summary>
public readonly record struct TrainingExample(int[] Ids, int[] Labels);

/// <summary>
/// Training and held-out examples streamed from a view with an ids column (and optionally a labels column):
/// every 1/EvalFraction-th row is held out (at most MaxEvalBlocks of them, kept in memory); the rest stream
/// once per epoch through a seeded shuffle window, so an epoch's order depends only on the seed and the epoch,
/// and a resumed run can skip exactly the examples it already used.
/// </summary>
public sealed class TrainingExamples
{
    readonly IDataView _data;
    readonly string _idsColumn;
    readonly string? _labelsColumn;
    readonly int _evalEvery;

    /// <summary>Makes one counting pass over <paramref name="data"/> and collects the held-out examples.</summary>
    public TrainingExamples(IDataView data, string idsColumn, string? labelsColumn, double evalFraction, int maxEvalExamples)
    {
        _data = data;
        _idsColumn = idsColumn;
        _labelsColumn = labelsColumn;
        _evalEvery = evalFraction > 0 ? Math.Max(2, (int)Math.Round(1 / evalFraction)) : 0;
        var eval = new List<TrainingExample>();
        long training = 0;
        foreach (var (index, example) in Read())
        {
            if (IsEval(index)) { if (eval.Count < maxEvalExamples) eval.Add(example); }
            else training++;
        }
        if (training == 0) throw new InvalidDataException(
            "The training data holds no training sequences" + (eval.Count > 0 ? " once the evaluation split is taken; lower EvalFraction or add data." : ": is it empty, or shorter than one block?"));
        EvalExamples = eval;
        ExamplesPerEpoch = training;
    }

    /// <summary>The held-out examples.</summary>
    public IReadOnlyList<TrainingExample> EvalExamples { get; }

    /// <summary>Training examples in one epoch.</summary>
    public long ExamplesPerEpoch { get; }

    bool IsEval(long index) => _evalEvery > 0 && index % _evalEvery == _evalEvery - 1;

    /// <summary>The training examples of <paramref name="epoch"/>, shuffled within a window of <paramref name="window"/>.</summary>
    public IEnumerable<TrainingExample> Epoch(int epoch, int seed, int window)
    {
        var random = new Random(HashCode.Combine(seed, epoch, 0x5eed));
        var buffer = new List<TrainingExample>(window);
        foreach (var (index, example) in Read())
        {
            if (IsEval(index)) continue;
            if (buffer.Count < window) { buffer.Add(example); continue; }
            int pick = random.Next(window);
            yield return buffer[pick];
            buffer[pick] = example;
        }
        while (buffer.Count > 0)
        {
            int pick = random.Next(buffer.Count);
            yield return buffer[pick];
            buffer[pick] = buffer[^1];
            buffer.RemoveAt(buffer.Count - 1);
        }
    }

    IEnumerable<(long Index, TrainingExample Example)> Read()
    {
        var idsColumn = _data.Schema[_idsColumn];
        var columns = new List<DataViewSchema.Column> { idsColumn };
        if (_labelsColumn != null) columns.Add(_data.Schema[_labelsColumn]);
        using var cursor = _data.GetRowCursor(columns);
        var ids = cursor.GetGetter<VBuffer<int>>(idsColumn);
        var labels = _labelsColumn == null ? null : cursor.GetGetter<VBuffer<int>>(_data.Schema[_labelsColumn]);
        VBuffer<int> idsValue = default, labelsValue = default;
        long index = 0;
        while (cursor.MoveNext())
        {
            ids(ref idsValue);
            int[] idArray = idsValue.DenseValues().ToArray();
            int[] labelArray;
            if (labels == null) labelArray = idArray;
            else
            {
                labels(ref labelsValue);
                labelArray = labelsValue.DenseValues().ToArray();
                if (labelArray.Length != idArray.Length)
                    throw new InvalidDataException($"Row {index}: {idArray.Length} ids but {labelArray.Length} labels.");
            }
            if (idArray.Length < 2) { index++; continue; } // nothing to predict
            yield return (index++, new TrainingExample(idArray, labelArray));
        }
    }

    /// <summary>Pads a micro-batch (labels padded with the ignore index).</summary>
    internal static TokenBatch Collate(IReadOnlyList<TrainingExample> examples, int padId) =>
        TokenBatch.Pad(examples.Select(e => (IReadOnlyList<int>)e.Ids).ToList(), padId, labels: examples.Select(e => (IReadOnlyList<int>)e.Labels).ToList());
}
