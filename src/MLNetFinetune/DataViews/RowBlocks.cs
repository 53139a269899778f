using Microsoft.ML;

namespace MLNetFinetune.DataViews;

/// <summary>
/// A column computed for blocks of rows at once (batched generation and scoring): the first request for a row reads it
/// and the next rows, up to the block size, through a second cursor over the same view, computes them together and
/// serves them as the main cursor reaches them. Falls back to one row at a time without a view to read ahead in.
/// </summary>
/// <typeparam name="TIn">What is read from a row.</typeparam>
/// <typeparam name="TOut">What is computed for it.</typeparam>
public sealed class RowBlocks<TIn, TOut>
{
    readonly DataViewRow _row;
    readonly IDataView? _source;
    readonly IReadOnlyList<string> _columns;
    readonly int _blockSize;
    readonly Func<DataViewRow, Func<TIn>> _reader;
    readonly Func<IReadOnlyList<TIn>, IReadOnlyList<TOut>> _compute;
    DataViewRowCursor? _ahead;
    Func<TIn>? _read;
    long _blockStart = -1;
    IReadOnlyList<TOut> _block = [];

    /// <summary>
    /// <paramref name="reader"/> makes a function that reads the current input of a row (of the main or the read-ahead
    /// cursor, which hold <paramref name="columns"/>); <paramref name="compute"/> maps a block of inputs to outputs, in order.
    /// </summary>
    public RowBlocks(DataViewRow row, IDataView? source, IReadOnlyList<string> columns, int blockSize,
        Func<DataViewRow, Func<TIn>> reader, Func<IReadOnlyList<TIn>, IReadOnlyList<TOut>> compute)
    {
        if (blockSize <= 0) throw new ArgumentOutOfRangeException(nameof(blockSize), "The block size must be positive.");
        (_row, _source, _columns, _blockSize, _reader, _compute) = (row, source, columns, blockSize, reader, compute);
    }

    /// <summary>The value for the main row's current position.</summary>
    public TOut Value
    {
        get
        {
            long position = _row.Position;
            if (_blockStart >= 0 && position >= _blockStart && position < _blockStart + _block.Count) return _block[(int)(position - _blockStart)];
            if (_source == null || _blockSize == 1)
            {
                _block = _compute([_reader(_row)()]);
                _blockStart = position;
                return _block[0];
            }
            if (_ahead == null || _ahead.Position >= position)
            {
                _ahead?.Dispose();
                _ahead = _source.GetRowCursor(_columns.Select(c => _source.Schema[c]));
                _read = _reader(_ahead);
            }
            while (_ahead.Position < position)
                if (!_ahead.MoveNext()) throw new InvalidOperationException($"The view ended before row {position} when read a second time.");
            var inputs = new List<TIn> { _read!() };
            while (inputs.Count < _blockSize && _ahead.MoveNext()) inputs.Add(_read!());
            _block = _compute(inputs);
            _blockStart = position;
            return _block[0];
        }
    }
}
