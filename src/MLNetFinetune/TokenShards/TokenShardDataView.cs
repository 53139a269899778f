using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNetFinetune.TokenShards;

/// <summary>
/// A <see cref="TokenShardDataset"/> as an <see cref="IDataView"/>: one row per block, a fixed-size
/// <see cref="ColumnName"/> column of Int32 ids, the row count known. A cursor reads blocks in order; a trainer that
/// shuffles reads <see cref="Dataset"/> by block index instead, so no epoch streams the corpus through a shuffle window.
/// </summary>
public sealed class TokenShardDataView : IDataView, IDisposable
{
    /// <summary>The ids column.</summary>
    public const string ColumnName = "TokenIds";

    /// <summary>Wraps <paramref name="dataset"/>, which the view then owns.</summary>
    public TokenShardDataView(TokenShardDataset dataset)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        Dataset = dataset;
        var builder = new DataViewSchema.Builder();
        builder.AddColumn(ColumnName, new VectorDataViewType(NumberDataViewType.Int32, dataset.BlockSize));
        Schema = builder.ToSchema();
    }

    /// <summary>The blocks, for reading by index.</summary>
    public TokenShardDataset Dataset { get; }

    /// <inheritdoc />
    public bool CanShuffle => false;

    /// <inheritdoc />
    public DataViewSchema Schema { get; }

    /// <inheritdoc />
    public long? GetRowCount() => Dataset.BlockCount;

    /// <inheritdoc />
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) =>
        new Cursor(this, columnsNeeded.Any(c => c.Index == 0));

    /// <inheritdoc />
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) =>
        [GetRowCursor(columnsNeeded, rand)];

    /// <summary>Releases the dataset's memory maps.</summary>
    public void Dispose() => Dataset.Dispose();

    sealed class Cursor(TokenShardDataView view, bool active) : DataViewRowCursor
    {
        long _position = -1;

        public override DataViewSchema Schema => view.Schema;
        public override long Position => _position;
        public override long Batch => 0;

        public override bool MoveNext() => _position < view.Dataset.BlockCount && ++_position < view.Dataset.BlockCount;

        public override bool IsColumnActive(DataViewSchema.Column column) => active && column.Index == 0;

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!IsColumnActive(column)) throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was created.");
            if (typeof(TValue) != typeof(VBuffer<int>)) throw new InvalidOperationException($"Column '{column.Name}' is VBuffer<Int32>, not {typeof(TValue).Name}.");
            ValueGetter<VBuffer<int>> getter = (ref VBuffer<int> value) =>
            {
                var editor = VBufferEditor.Create(ref value, view.Dataset.BlockSize);
                view.Dataset.ReadBlock(_position, editor.Values);
                value = editor.Commit();
            };
            return (ValueGetter<TValue>)(Delegate)getter;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);
    }
}
