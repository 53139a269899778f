using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNetFinetune.DataViews;

/// <summary>
/// Base of the transformers that append computed columns to each row (prompt templates, tokenization, generation).
/// ML.NET's own RowToRowTransformerBase and its mappers are internal, so this is the public equivalent:
/// a subclass names its output columns and the input columns they read, and makes one getter per output column.
/// Output columns hide input columns of the same name, as in ML.NET.
/// </summary>
public abstract class AppendColumnsTransformer : ITransformer
{
    /// <summary>The columns this transformer appends.</summary>
    protected abstract IReadOnlyList<(string Name, DataViewType Type)> OutputColumns { get; }

    /// <summary>Checks the input schema, throwing an error that names any missing or mistyped column.</summary>
    protected abstract void ValidateInput(DataViewSchema inputSchema);

    /// <summary>The input columns that output column <paramref name="outputIndex"/> reads.</summary>
    protected abstract IEnumerable<string> InputsOf(int outputIndex);

    /// <summary>
    /// Makes the getters (each a <c>ValueGetter&lt;T&gt;</c> of its column's type) of all output columns over an input
    /// row, in <see cref="OutputColumns"/> order; made together so they can share per-row work (one tokenization
    /// serving both the ids and the mask column). <paramref name="isActive"/> tells which outputs will be read; the
    /// input row holds only the columns those read, so inactive outputs may get a null getter.
    /// </summary>
    protected abstract Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive);

    /// <summary>
    /// Like <see cref="MakeGetters(DataViewRow, Func{int, bool})"/>, also given the view the row cursor runs over (null
    /// for a mapped single row or a shuffled cursor), so costly columns can be computed for blocks of rows at once
    /// (<see cref="RowBlocks{TIn, TOut}"/>); what the getters hold open goes into <paramref name="owned"/>, disposed with
    /// the cursor. By default ignores both.
    /// </summary>
    protected virtual Delegate[] MakeGetters(DataViewRow input, Func<int, bool> isActive, IDataView? source, ICollection<IDisposable> owned) =>
        MakeGetters(input, isActive);

    /// <inheritdoc />
    public bool IsRowToRowMapper => true;

    /// <inheritdoc />
    public DataViewSchema GetOutputSchema(DataViewSchema inputSchema)
    {
        ValidateInput(inputSchema);
        var builder = new DataViewSchema.Builder();
        builder.AddColumns(inputSchema);
        foreach (var (name, type) in OutputColumns) builder.AddColumn(name, type);
        return builder.ToSchema();
    }

    /// <inheritdoc />
    public IDataView Transform(IDataView input) => new View(this, input);

    /// <inheritdoc />
    public IRowToRowMapper GetRowToRowMapper(DataViewSchema inputSchema) => new Mapper(this, inputSchema);

    void ICanSaveModel.Save(ModelSaveContext ctx) => throw new NotSupportedException(
        $"{GetType().Name} cannot be written into an ML.NET model zip: ML.NET keeps the serialization API for custom " +
        "transformers internal. Recreate it from its options (or, for models, save and load the model directory).");

    // Which input columns a set of active output-schema columns needs.
    bool[] InputColumnsNeeded(DataViewSchema inputSchema, Func<int, bool> outputActive)
    {
        var needed = new bool[inputSchema.Count];
        for (int i = 0; i < inputSchema.Count; i++) needed[i] = outputActive(i);
        for (int j = 0; j < OutputColumns.Count; j++)
        {
            if (!outputActive(inputSchema.Count + j)) continue;
            foreach (string name in InputsOf(j)) needed[inputSchema[name].Index] = true;
        }
        return needed;
    }

    /// <summary>
    /// An input row plus the appended columns, computed lazily from it. Over a cursor it moves with it and owns it;
    /// over a row handed to <see cref="IRowToRowMapper.GetRow"/> it neither moves nor disposes the caller's row.
    /// </summary>
    sealed class Row : DataViewRowCursor
    {
        readonly AppendColumnsTransformer _parent;
        readonly DataViewRow _input;
        readonly DataViewRowCursor? _cursor;
        readonly bool[] _active;
        readonly IDataView? _source;
        readonly List<IDisposable> _owned = [];
        Delegate[]? _getters;

        public Row(AppendColumnsTransformer parent, DataViewRow input, DataViewSchema schema, bool[] active, bool ownsCursor, IDataView? source = null)
        {
            _source = source;
            _parent = parent;
            _input = input;
            _cursor = ownsCursor ? (DataViewRowCursor)input : null;
            Schema = schema;
            _active = active;
        }

        public override DataViewSchema Schema { get; }
        public override long Position => _input.Position;
        public override long Batch => _input.Batch;
        public override bool MoveNext() => _cursor?.MoveNext() ?? throw new InvalidOperationException("A mapped row does not move; move the row it maps.");
        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];
        public override ValueGetter<DataViewRowId> GetIdGetter() => _input.GetIdGetter();

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index]) throw new InvalidOperationException($"Column '{column.Name}' is not active in this cursor.");
            int inputCount = _input.Schema.Count;
            if (column.Index < inputCount) return _input.GetGetter<TValue>(_input.Schema[column.Index]);
            _getters ??= _parent.MakeGetters(_input, j => _active[inputCount + j], _source, _owned);
            return _getters[column.Index - inputCount] as ValueGetter<TValue> ?? throw new InvalidOperationException(
                $"Column '{column.Name}' is {column.Type}; it cannot be read as {typeof(TValue).Name}.");
        }

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                foreach (var resource in _owned) resource.Dispose();
                _cursor?.Dispose();
            }
            base.Dispose(disposing);
        }
    }

    sealed class View(AppendColumnsTransformer parent, IDataView input) : IDataView
    {
        public DataViewSchema Schema { get; } = parent.GetOutputSchema(input.Schema);
        public bool CanShuffle => input.CanShuffle;
        public long? GetRowCount() => input.GetRowCount();

        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        {
            var active = new bool[Schema.Count];
            foreach (var c in columnsNeeded) active[c.Index] = true;
            var needed = parent.InputColumnsNeeded(input.Schema, i => active[i]);
            var inputCursor = input.GetRowCursor(input.Schema.Where(c => needed[c.Index]), rand);
            // A second cursor over the same view meets the rows in the same order only when neither is shuffled.
            return new Row(parent, inputCursor, Schema, active, ownsCursor: true, source: rand == null ? input : null);
        }

        // The appended getters may hold per-row state, so one cursor serves the pass.
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
            => [GetRowCursor(columnsNeeded, rand)];
    }

    sealed class Mapper(AppendColumnsTransformer parent, DataViewSchema inputSchema) : IRowToRowMapper
    {
        public DataViewSchema InputSchema => inputSchema;
        public DataViewSchema OutputSchema { get; } = parent.GetOutputSchema(inputSchema);

        public IEnumerable<DataViewSchema.Column> GetDependencies(IEnumerable<DataViewSchema.Column> dependingColumns)
        {
            var active = new bool[OutputSchema.Count];
            foreach (var c in dependingColumns) active[c.Index] = true;
            var needed = parent.InputColumnsNeeded(inputSchema, i => active[i]);
            return inputSchema.Where(c => needed[c.Index]);
        }

        public DataViewRow GetRow(DataViewRow input, IEnumerable<DataViewSchema.Column> activeColumns)
        {
            var active = new bool[OutputSchema.Count];
            foreach (var c in activeColumns) active[c.Index] = true;
            return new Row(parent, input, OutputSchema, active, ownsCursor: false);
        }
    }
}
