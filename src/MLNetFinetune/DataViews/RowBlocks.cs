using Microsoft.ML;

namespace MLNetFinetune.DataViews;

/// <summary>
/// A column computed for blocks of rows at once (batched generation and scoring): the first request for a row reads it
/// and the next rows, up to the block size, through a second cursor over the same view, computes them together and
/// serves them as the main cursor reaches them. Falls back to one row at a time without a view to read ahead in, or when
/// the second read of the view does not give the main cursor's row (a source that is not re-readable in the same order).
/// Upstream transforms run again for the second cursor, so put costly ones after a cache (<c>AppendCacheCheckpoint</c>).
/// </summary>
/// <typeparam name="TIn">What is read from a row.</typeparam>
/// <typeparam name="TOut">What is computed for it.</typeparam>
public sealed class RowBlocks<TIn, TOut> : IDisposable
{
    readonly DataViewRow _row;
    IDataView? _source;
    readonly IReadOnlyList<string> _columns;
    readonly int _blockSize;
    readonly Func<DataViewRow, Func<TIn>> _reader;
    readonly Func<IReadOnlyList<TIn>, IReadOnlyList<TOut>> _compute;
    DataViewRowCursor? _ahead;
    Func<TIn>? _read, _mainRead;
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
            _mainRead ??= _reader(_row);
            if (_source == null || _blockSize == 1) return One(position);
            if (_ahead == null || _ahead.Position >= position)
            {
                _ahead?.Dispose();
                _ahead = _source.GetRowCursor(_columns.Select(c => _source.Schema[c]));
                _read = _reader(_ahead);
            }
            bool found = true;
            while (found && _ahead.Position < position) found = _ahead.MoveNext();
            var inputs = new List<TIn>();
            if (found) inputs.Add(_read!());
            if (!found || !EqualityComparer<TIn>.Default.Equals(inputs[0], _mainRead()))
            {
                // The second read disagrees with the first: compute row by row from here on.
                Dispose();
                _source = null;
                return One(position);
            }
            while (inputs.Count < _blockSize && _ahead.MoveNext()) inputs.Add(_read!());
            if (inputs.Count < _blockSize) Dispose(); // the view is done: release the second cursor now
            _block = _compute(inputs);
            _blockStart = position;
            return _block[0];
        }
    }

    TOut One(long position)
    {
        _block = _compute([_mainRead!()]);
        _blockStart = position;
        return _block[0];
    }

    /// <summary>Releases the read-ahead cursor.</summary>
    public void Dispose()
    {
        _ahead?.Dispose();
        _ahead = null;
    }
}
