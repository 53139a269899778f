using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TokenShards;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>
/// One training sequence: token ids and the aligned labels (−100 where no loss is taken). A packed sequence also has
/// <paramref name="Positions"/>, each token's position within its own example (0 starts an example); null means one
/// example from position 0.
/// </summary>
public readonly record struct TrainingExample(int[] Ids, int[] Labels, int[]? Positions = null);

/// <summary>
/// Training and held-out examples from a view with an ids column (and optionally a labels column): every
/// 1/EvalFraction-th row is held out (at most MaxEvalBlocks of them, kept in memory). When the view knows its row count
/// and it is at most the in-memory limit, the training examples are kept in memory and each epoch is a full seeded
/// permutation of them; otherwise they stream once per epoch through a seeded shuffle window. Token shards
/// (<see cref="TokenShardDataView"/>) are read in place instead: each epoch permutes block indices and a block is read from
/// its memory map only when taken, so data-parallel ranks each read only their own blocks. Either way an epoch's order
/// depends only on the seed and the epoch, so a resumed run can skip exactly the examples it already used.
/// </summary>
public sealed class TrainingExamples
{
    readonly IDataView _data;
    readonly string _idsColumn;
    readonly string? _labelsColumn;
    readonly int _evalEvery, _maxEval, _vocabSize, _packInto;
    readonly List<TrainingExample>? _training;
    readonly TokenShardDataset? _blocks;

    /// <summary>
    /// Makes one counting pass over <paramref name="data"/> and collects the held-out examples, and the training examples
    /// too when the view's row count is known and at most <paramref name="inMemoryRows"/> (0: always stream). Ids must be
    /// below <paramref name="vocabSize"/>; examples with nothing to learn (no labelled target) are left out. With
    /// <paramref name="packInto"/> &gt; 0, whole examples are packed into sequences of up to that many tokens.
    /// </summary>
    public TrainingExamples(IDataView data, string idsColumn, string? labelsColumn, double evalFraction, int maxEvalExamples, int vocabSize,
        int packInto = 0, int inMemoryRows = 0)
    {
        _packInto = packInto;
        _data = data;
        _idsColumn = idsColumn;
        _labelsColumn = labelsColumn;
        _vocabSize = vocabSize;
        _evalEvery = evalFraction > 0 ? Math.Max(2, (int)Math.Round(1 / evalFraction)) : 0;
        _maxEval = maxEvalExamples;
        if (data is TokenShardDataView shards)
        {
            _blocks = shards.Dataset;
            long blocks = _blocks.BlockCount, held = 0;
            var evalBlocks = new List<TrainingExample>();
            for (long i = _evalEvery - 1; _evalEvery > 0 && i < blocks && IsEval(i); i += _evalEvery, held++) evalBlocks.Add(ReadBlock(i));
            if (blocks - held <= 0) throw new InvalidDataException($"The token shards hold {blocks} block(s) of {_blocks.BlockSize} tokens" +
                (held > 0 ? ", all held out for evaluation; lower EvalFraction or add data." : ": fewer tokens than one block."));
            if (blocks - held > int.MaxValue) throw new InvalidDataException($"The token shards hold {blocks:N0} blocks; an epoch's permutation holds at most {int.MaxValue:N0}. Use larger blocks.");
            EvalExamples = evalBlocks;
            ExamplesPerEpoch = blocks - held;
            return;
        }
        var eval = new List<TrainingExample>();
        var training = data.GetRowCount() is { } rows && rows <= inMemoryRows ? new List<TrainingExample>() : null;
        long count = 0;
        foreach (var (index, example) in Read())
        {
            if (IsEval(index)) eval.Add(example);
            else { training?.Add(example); count++; }
        }
        if (count == 0) throw new InvalidDataException(
            "The training data holds no training sequences" + (eval.Count > 0 ? " once the evaluation split is taken; lower EvalFraction or add data." : ": is it empty, or shorter than one block?"));
        EvalExamples = eval;
        ExamplesPerEpoch = count;
        _training = training;
    }

    /// <summary>The held-out examples.</summary>
    public IReadOnlyList<TrainingExample> EvalExamples { get; }

    /// <summary>Training examples in one epoch.</summary>
    public long ExamplesPerEpoch { get; }

    /// <summary>True when the training examples are held in memory (the epochs do not read the view again).</summary>
    public bool InMemory => _training != null;

    /// <summary>True when <see cref="Epoch"/> with this window draws a full permutation (in memory or token shards, window above 1).</summary>
    public bool Permutes(int window) => (InMemory || _blocks != null) && window > 1;

    // Every _evalEvery-th example, until _maxEval are held out; later ones train.
    bool IsEval(long index) => _evalEvery > 0 && index % _evalEvery == _evalEvery - 1 && index / _evalEvery < _maxEval;

    /// <summary>
    /// The training examples of <paramref name="epoch"/>: a full permutation when <see cref="Permutes"/>, else streamed
    /// through a shuffle window of <paramref name="window"/>; a window of 1 keeps data order.
    /// </summary>
    public IEnumerable<TrainingExample> Epoch(int epoch, int seed, int window, int lengthGroupBatch = 0) =>
        Order(epoch, seed, window, lengthGroupBatch).Select(e => e.Read());

    /// <summary>
    /// <see cref="Epoch"/>'s order, each example read only when taken: data-parallel ranks all follow the one order and
    /// each reads only its share.
    /// </summary>
    internal IEnumerable<PendingExample> Order(int epoch, int seed, int window, int lengthGroupBatch = 0)
    {
        // A fixed mix (HashCode.Combine is randomised per process), so a resumed run in a new process sees the same order.
        var random = new Random(unchecked(seed * 1_000_003 + epoch * 7_919 + 0x5eed));
        if (_blocks != null) // blocks are all one length: nothing to group
            return (window > 1 ? PermutedIndices((int)ExamplesPerEpoch, random) : Enumerable.Range(0, (int)ExamplesPerEpoch)).Select(t => new PendingExample(this, TrainingBlock(t)));
        if (Permutes(window)) return (lengthGroupBatch > 0 ? GroupedByLength(Permutation(_training!, random), lengthGroupBatch) : Permutation(_training!, random)).Select(e => new PendingExample(e));
        return (_training != null ? _training.AsReadOnly() : Window(random, window)).Select(e => new PendingExample(e));
    }

    // Fisher–Yates over the indices, as a seeded RandomSampler: every example exactly once per epoch.
    static IEnumerable<TrainingExample> Permutation(List<TrainingExample> examples, Random random) =>
        PermutedIndices(examples.Count, random).Select(i => examples[i]);

    static int[] PermutedIndices(int count, Random random)
    {
        var order = new int[count];
        for (int i = 0; i < order.Length; i++) order[i] = i;
        for (int i = order.Length - 1; i > 0; i--)
        {
            int j = random.Next(i + 1);
            (order[i], order[j]) = (order[j], order[i]);
        }
        return order;
    }

    // The block of the t-th training example: held-out blocks (every _evalEvery-th of the first _maxEval·_evalEvery) are skipped.
    long TrainingBlock(long t)
    {
        if (_evalEvery == 0) return t;
        long inGroups = (long)_maxEval * (_evalEvery - 1);
        return t < inGroups ? t / (_evalEvery - 1) * _evalEvery + t % (_evalEvery - 1) : (long)_maxEval * _evalEvery + (t - inGroups);
    }

    /// <summary>Reads block <paramref name="index"/> of the token shards as a training example (labels are the ids).</summary>
    internal TrainingExample ReadBlock(long index)
    {
        var ids = new int[_blocks!.BlockSize];
        _blocks.ReadBlock(index, ids);
        RequireInVocabulary(ids, id => $"Block {index} of the token shards holds token id {id}, outside the model's vocabulary of {_vocabSize}: were the shards written with this model's tokenizer?");
        return new TrainingExample(ids, ids);
    }

    // Every id must index the model's embedding; the message names where the stray id came from.
    void RequireInVocabulary(int[] ids, Func<int, string> message)
    {
        foreach (int id in ids)
            if ((uint)id >= (uint)_vocabSize) throw new InvalidDataException(message(id));
    }

    /// <summary>Micro-batches per length-sorted group of <see cref="Epoch"/>.</summary>
    public const int BatchesPerLengthGroup = 10;

    // Hugging Face's LengthGroupedSampler: each run of the permutation worth some micro-batches is sorted longest first (a
    // stable sort, so the order stays a function of the seed), so a micro-batch holds similar lengths. Its groups of 50
    // micro-batches drew a long-to-short sawtooth in the loss curve (short recall pairs and long passages have different
    // losses) and learnt less on the quickstart; 10 (one log interval) fill batches as well and leave no trend.
    static IEnumerable<TrainingExample> GroupedByLength(IEnumerable<TrainingExample> permuted, int batchSize) =>
        permuted.Chunk(BatchesPerLengthGroup * batchSize).SelectMany(group => group.OrderByDescending(e => e.Ids.Length));

    IEnumerable<TrainingExample> Window(Random random, int window)
    {
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

    // With packing, whole examples are concatenated until the next would overflow the block, padding-free as TRL's: each
    // token's position restarts with its example (and attention stays within it, see Collate). An example's first
    // label is ignored: it would be predicted from the end of the previous example.
    IEnumerable<(long Index, TrainingExample Example)> Read()
    {
        if (_packInto <= 0)
        {
            foreach (var item in ReadRows()) yield return item;
            yield break;
        }
        var ids = new List<int>(_packInto);
        var labels = new List<int>(_packInto);
        var positions = new List<int>(_packInto);
        long index = 0;
        foreach (var (_, example) in ReadRows())
        {
            if (ids.Count > 0 && ids.Count + example.Ids.Length > _packInto)
            {
                yield return (index++, new TrainingExample([.. ids], [.. labels], [.. positions]));
                ids.Clear();
                labels.Clear();
                positions.Clear();
            }
            ids.AddRange(example.Ids);
            labels.Add(TokenSequences.IgnoreIndex);
            labels.AddRange(example.Labels.AsSpan(1));
            for (int i = 0; i < example.Ids.Length; i++) positions.Add(i);
        }
        if (ids.Count > 0) yield return (index, new TrainingExample([.. ids], [.. labels], [.. positions]));
    }

    IEnumerable<(long Index, TrainingExample Example)> ReadRows()
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
            RequireInVocabulary(idArray, id => $"Row {index} of column '{_idsColumn}' holds token id {id}, outside the model's vocabulary of {_vocabSize}.");
            bool learnable = false;
            for (int i = 1; i < labelArray.Length && !learnable; i++) learnable = labelArray[i] != TokenSequences.IgnoreIndex;
            if (!learnable) continue; // nothing to predict; not counted, so the split stays fixed
            yield return (index++, new TrainingExample(idArray, labelArray));
        }
    }

    /// <summary>
    /// Pads a micro-batch (labels with the ignore index) into int64 tensors on <paramref name="device"/>, and counts
    /// the labelled targets (labels after the first position), which weight the loss. Packed examples also get position
    /// ids restarting per example and a per-example attention mask (padding is an example of its own).
    /// </summary>
    internal static TrainingBatch Collate(IReadOnlyList<TrainingExample> examples, int padId, Device device)
    {
        var batch = TokenBatch.Pad(examples.Select(e => (IReadOnlyList<int>)e.Ids).ToList(), padId, labels: examples.Select(e => (IReadOnlyList<int>)e.Labels).ToList());
        long tokens = batch.AttentionMask.Sum(), targets = 0;
        for (int r = 0; r < batch.Rows; r++)
            for (int t = 1; t < batch.Length; t++)
                if (batch.Labels![r * batch.Length + t] != TokenSequences.IgnoreIndex) targets++;
        long[] shape = [batch.Rows, batch.Length];
        using var scope = NewDisposeScope();
        var ids = tensor(batch.Ids, shape).to(int64, device).MoveToOuterDisposeScope();
        var labels = tensor(batch.Labels!, shape).to(int64, device).MoveToOuterDisposeScope();
        if (examples.All(e => e.Positions == null)) return new TrainingBatch(ids, labels, null, null, tokens, targets);

        var positions = new long[batch.Ids.Length];
        var exampleIds = new long[batch.Ids.Length];
        for (int r = 0; r < batch.Rows; r++)
        {
            var e = examples[r];
            long number = -1;
            for (int t = 0; t < e.Ids.Length; t++)
            {
                int position = e.Positions?[t] ?? t;
                if (position == 0) number++;
                positions[r * batch.Length + t] = position;
                exampleIds[r * batch.Length + t] = number;
            }
            exampleIds.AsSpan(r * batch.Length + e.Ids.Length, batch.Length - e.Ids.Length).Fill(number + 1);
        }
        var mask = AttentionMasks.PerExample(tensor(exampleIds, shape, device: device)).MoveToOuterDisposeScope();
        return new TrainingBatch(ids, labels, tensor(positions, shape, device: device).MoveToOuterDisposeScope(), mask, tokens, targets);
    }
}

/// <summary>An example in an epoch's order, read when a rank takes it: in memory already, or a block of token shards.</summary>
internal readonly struct PendingExample
{
    readonly TrainingExample _example;
    readonly TrainingExamples? _shards;
    readonly long _block;

    public PendingExample(TrainingExample example) => _example = example;

    public PendingExample(TrainingExamples shards, long block) => (_shards, _block) = (shards, block);

    public TrainingExample Read() => _shards?.ReadBlock(_block) ?? _example;
}

/// <summary>
/// A collated micro-batch: ids and labels <c>[batch, seq]</c>; for packed examples position ids <c>[batch, seq]</c> and
/// an attention mask <c>[batch, 1, seq, seq]</c> (null otherwise: plain causal attention); tokens (padding excluded) and
/// labelled targets.
/// </summary>
internal sealed record TrainingBatch(Tensor Ids, Tensor Labels, Tensor? PositionIds, Tensor? AttentionMask, long Tokens, long Targets) : IDisposable
{
    /// <summary>The loss summed over the labelled targets.</summary>
    public Tensor LossSum(TransformerForCausalLM model) => model.Loss(Ids, Labels, PositionIds, AttentionMask, nn.Reduction.Sum);

    public void Dispose()
    {
        Ids.Dispose();
        Labels.Dispose();
        PositionIds?.Dispose();
        AttentionMask?.Dispose();
    }
}
