using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Runtime;

namespace MLNetFinetune.Data;

/// <summary>
/// A pretraining corpus as a streaming <see cref="IDataView"/>: one row per document, a text column and
/// optional metadata columns. Nothing is held beyond the current document, so memory stays flat however large
/// the corpus; every cursor is a new pass over the files, so the view serves epoch after epoch.
/// </summary>
public sealed class CorpusDataView : IDataView
{
    readonly CorpusOptions _options;
    readonly (string Column, string Path)[] _metadata;
    readonly IChannelProvider? _log;

    /// <summary>Resolves the corpus files and builds the schema; the files are read only when a cursor moves.</summary>
    public CorpusDataView(CorpusOptions options) : this(options, log: null) { }

    internal CorpusDataView(CorpusOptions options, IChannelProvider? log)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.MaxRecordBytes <= 0) throw new ArgumentOutOfRangeException(nameof(options), "MaxRecordBytes must be positive.");
        _options = options;
        _log = log;
        Files = DataFiles.Resolve(options.Path, CorpusOptions.SupportedExtensions);
        _metadata = options.MetadataFields.Select(ParseMetadataField).ToArray();
        if (_metadata.Length > 0 && Files.All(f => DataFiles.UncompressedName(f).EndsWith(".txt", StringComparison.Ordinal)))
            throw new ArgumentException($"Metadata fields ({string.Join(", ", options.MetadataFields)}) need JSON Lines input; '{options.Path}' holds only text files.");

        var builder = new DataViewSchema.Builder();
        builder.AddColumn(options.TextColumnName, TextDataViewType.Instance);
        foreach (var (column, _) in _metadata)
        {
            if (column == options.TextColumnName) throw new ArgumentException($"Metadata column '{column}' has the same name as the text column.");
            builder.AddColumn(column, TextDataViewType.Instance);
        }
        Schema = builder.ToSchema();
    }

    /// <summary>The files of the corpus, in the order every pass reads them.</summary>
    public IReadOnlyList<string> Files { get; }

    /// <summary>What the last completed pass read and skipped; null before any pass completed.</summary>
    public DataLoadReport? LastPass { get; private set; }

    /// <inheritdoc />
    public bool CanShuffle => false;

    /// <inheritdoc />
    public DataViewSchema Schema { get; }

    /// <inheritdoc />
    public long? GetRowCount() => null;

    /// <inheritdoc />
    public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null)
        => new Cursor(this, columnsNeeded);

    /// <inheritdoc />
    public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null)
        => [GetRowCursor(columnsNeeded, rand)];

    static (string, string) ParseMetadataField(string field)
    {
        int eq = field.IndexOf('=');
        return eq < 0 ? (field, field) : (field[..eq].Trim(), field[(eq + 1)..].Trim());
    }

    void Completed(CorpusReader reader)
    {
        var report = reader.Report();
        LastPass = report;
        _options.Progress?.Report(report);
        if (_log != null)
        {
            using var channel = _log.Start("Corpus");
            if (report.Skipped > 0) channel.Warning(MessageSensitivity.None, report.ToString());
            else channel.Info(MessageSensitivity.None, report.ToString());
        }
        if (report.Records == 0)
            throw new DataFileException(_options.Path, 0, report.Skipped > 0
                ? $"the corpus has no usable documents: all {report.Skipped:N0} records were skipped (first: {report.SkipReasons[0]})"
                : $"the corpus has no documents ({Files.Count} file(s), all empty or blank)");
    }

    sealed class Cursor : DataViewRowCursor
    {
        readonly CorpusDataView _view;
        readonly CorpusReader _reader;
        readonly bool[] _active;
        long _position = -1;
        bool _done;

        public Cursor(CorpusDataView view, IEnumerable<DataViewSchema.Column> columnsNeeded)
        {
            _view = view;
            _reader = new CorpusReader(view._options, view.Files, view._metadata);
            _active = new bool[view.Schema.Count];
            foreach (var c in columnsNeeded) _active[c.Index] = true;
        }

        public override DataViewSchema Schema => _view.Schema;
        public override long Position => _position;
        public override long Batch => 0;

        public override bool MoveNext()
        {
            if (_done) return false;
            if (_reader.MoveNext())
            {
                _position++;
                return true;
            }
            _done = true;
            _view.Completed(_reader);
            return false;
        }

        public override bool IsColumnActive(DataViewSchema.Column column) => _active[column.Index];

        public override ValueGetter<TValue> GetGetter<TValue>(DataViewSchema.Column column)
        {
            if (!_active[column.Index]) throw new InvalidOperationException($"Column '{column.Name}' was not requested when the cursor was created.");
            if (typeof(TValue) != typeof(ReadOnlyMemory<char>))
                throw new InvalidOperationException($"Column '{column.Name}' is text (ReadOnlyMemory<char>), not {typeof(TValue).Name}.");
            ValueGetter<ReadOnlyMemory<char>> getter = column.Index == 0
                ? (ref ReadOnlyMemory<char> value) => value = _reader.Text.AsMemory()
                : (ref ReadOnlyMemory<char> value) => value = (_reader.Metadata[column.Index - 1] ?? "").AsMemory();
            return (ValueGetter<TValue>)(Delegate)getter;
        }

        public override ValueGetter<DataViewRowId> GetIdGetter() =>
            (ref DataViewRowId id) => id = new DataViewRowId((ulong)_position, 0);

        protected override void Dispose(bool disposing)
        {
            if (disposing) _reader.Dispose();
            base.Dispose(disposing);
        }
    }
}
