using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Tokenization;

/// <summary>What happens to the tokens left over after the last full block.</summary>
public enum RemainderPolicy
{
    /// <summary>Drop them (as Hugging Face's <c>group_texts</c> does).</summary>
    Drop,
    /// <summary>Emit them as a shorter last block.</summary>
    Keep,
    /// <summary>Emit them padded to a full block, with the attention mask marking the padding.</summary>
    Pad,
}

/// <summary>Options for packing token sequences into fixed-length blocks for pretraining.</summary>
public sealed class PackingOptions
{
    /// <summary>Tokens per block (the model's context length during pretraining).</summary>
    public required int BlockSize { get; init; }

    /// <summary>The input ids column (variable-length Int32 vectors, e.g. from the tokenize transform). Default <c>InputIds</c>.</summary>
    public string InputColumnName { get; init; } = "InputIds";

    /// <summary>The output ids column. Default <c>InputIds</c>.</summary>
    public string OutputColumnName { get; init; } = "InputIds";

    /// <summary>The output attention-mask column (1 for tokens, 0 for padding). Default <c>AttentionMask</c>.</summary>
    public string AttentionMaskColumnName { get; init; } = "AttentionMask";

    /// <summary>A token put after every document (usually the tokenizer's end of text), so blocks cross documents only there; null for none.</summary>
    public int? SeparatorId { get; init; }

    /// <summary>The leftover tokens after the last full block. Default drop.</summary>
    public RemainderPolicy Remainder { get; init; } = RemainderPolicy.Drop;

    /// <summary>The pad id for <see cref="RemainderPolicy.Pad"/>.</summary>
    public int PadId { get; init; }
}

/// <summary>
/// Concatenates the token sequences of a view (documents, each followed by the separator) and cuts the stream into
/// blocks of <see cref="PackingOptions.BlockSize"/> tokens: no padding is wasted and no token lost but the remainder.
/// Streams: only the tokens of the block being built are held. Each cursor is a new pass.
/// </summary>
public sealed class PackedTokensDataView : IDataView
{
    readonly IDataView _input;
    readonly PackingOptions _options;
    readonly DataViewSchema.Column _inputColumn;

    /// <summary>Checks the input column and builds the output schema.</summary>
    public PackedTokensDataView(IDataView input, PackingOptions options)
    {
        ArgumentNullException.ThrowIfNull(input);
        ArgumentNullException.ThrowIfNull(options);
        if (options.BlockSize <= 0) throw new ArgumentOutOfRangeException(nameof(options), "BlockSize must be positive.");
        if (options.OutputColumnName == options.AttentionMaskColumnName) throw new ArgumentException("The ids and mask columns need different names.");
        _input = input;
        _options = options;
        _inputColumn = input.Schema.GetColumnOrNull(options.InputColumnName) ?? throw new ArgumentOutOfRangeException(nameof(options),
            $"Packing reads column '{options.InputColumnName}', which the input does not have. Input columns: {SchemaShapes.Names(input.Schema)}.");
        if (_inputColumn.Type is not VectorDataViewType { ItemType: NumberDataViewType n } || n.RawType != typeof(int))
            throw new ArgumentOutOfRangeException(nameof(options), $"Packing reads column '{options.InputColumnName}', which is {_inputColumn.Type}; it must be a vector of Int32 token ids.");

        var type = options.Remainder == RemainderPolicy.Keep
            ? TokenSequences.IdsType
            : new VectorDataViewType(NumberDataViewType.Int32, options.BlockSize);
        var builder = new DataViewSchema.Builder();
        builder.AddColumn(options.OutputColumnName, type);
        builder.AddColumn(options.AttentionMaskColumnName, type);
        Schema = builder.ToSchema();
    }

    /// <inheritdoc />
    public bool CanShuffle => false;

    /// <inheritdoc />
    public DataViewSchema Schema { get; }

    /// <inheritdoc />
    public long? GetRowCount() => null;

    /// <inheritdoc />
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => new Cursor(this);

    /// <inheritdoc />
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => [GetRowCursor(columnsNeeded, rand)];

    sealed class Cursor : DataViewRowCursor
    {
        readonly PackedTokensDataView _view;
        readonly DataViewRowCursor _input;
        readonly ValueGetter<VBuffer<int>> _idsGetter;
        readonly List<int> _pending = [];
        int _head;                // _pending[.._head] is consumed; compacted when it passes half
        VBuffer<int> _ids;
        readonly int[] _block;
        readonly int[] _mask;
        int _blockLength;
        long _position = -1;
        bool _inputDone;

        public Cursor(PackedTokensDataView view)
        {
            _view = view;
            _input = view._input.GetRowCursor([view._inputColumn]);
            _idsGetter = _input.GetGetter<VBuffer<int>>(view._inputColumn);
            _block = new int[view._options.BlockSize];
            _mask = new int[view._options.BlockSize];
        }

        public override DataViewSchema Schema => _view.Schema;
        public override long Position => _position;
        public override long Batch => 0;
        public override bool IsColumnActive(DataViewSchema.Column column) => true;

        public override bool MoveNext()
        {
            var o = _view._options;
            while (_pending.Count - _head < o.BlockSize && !_inputDone)
            {
                if (!_input.MoveNext()) { _inputDone = true; break; }
                _idsGetter(ref _ids);
                if (_ids.IsDense) _pending.AddRange(_ids.GetValues());
                else _pending.AddRange(_ids.DenseValues());
                if (o.SeparatorId is int separator) _pending.Add(separator);
            }
            int take = Math.Min(o.BlockSize, _pending.Count - _head);
            if (take == 0 || (take < o.BlockSize && o.Remainder == RemainderPolicy.Drop)) return false;
            _pending.CopyTo(_head, _block, 0, take);
            _head += take;
            if (_head > _pending.Count / 2)
            {
                _pending.RemoveRange(0, _head);
                _head = 0;
            }
            Array.Fill(_mask, 1, 0, take);
            _blockLength = take;
            if (take < o.BlockSize && o.Remainder == RemainderPolicy.Pad)
            {
                Array.Fill(_block, o.PadId, take, o.BlockSize - take);
                Array.Fill(_mask, 0, take, o.BlockSize - take);
                _blockLength = o.BlockSize;
            }
            _position++;
            return true;
        }

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (typeof(TValue) != typeof(VBuffer<int>))
                throw new InvalidOperationException($"Column '{column.Name}' holds VBuffer<Int32>, not {typeof(TValue).Name}.");
            int[] source = column.Index == 0 ? _block : _mask;
            ValueGetter<VBuffer<int>> getter = (ref VBuffer<int> value) => TokenSequences.Set(ref value, source.AsSpan(0, _blockLength));
            return (ValueGetter<TValue>)(Delegate)getter;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() => (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);

        protected override void Dispose(bool disposing)
        {
            if (disposing) _input.Dispose();
            base.Dispose(disposing);
        }
    }
}
