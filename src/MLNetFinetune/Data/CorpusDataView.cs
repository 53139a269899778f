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
        CheckFieldPaths(options, _metadata);
        foreach (string file in Files) CorpusReader.CheckFileType(file); // fail now, not hours into a pass
        if (_metadata.Length > 0 && Files.All(f => DataFiles.UncompressedName(f).EndsWith(".txt", StringComparison.Ordinal)))
            throw new ArgumentException($"Metadata fields ({string.Join(", ", options.MetadataFields)}) need JSON Lines input; '{options.Path}' holds only text files.");

        var builder = new DataViewSchema.Builder();
        builder.AddColumn(options.TextColumnName, TextDataViewType.Instance);
        foreach (var (column, _) in _metadata)
        {
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
        var (column, path) = eq < 0 ? (field, field) : (field[..eq].Trim(), field[(eq + 1)..].Trim());
        if (column.Length == 0 || path.Length == 0 || path.Split('.').Any(s => s.Length == 0))
            throw new ArgumentException($"Metadata field '{field}' is not 'path' or 'column=path' (paths are dotted field names, e.g. meta.pile_set_name).");
        return (column, path);
    }

    // Each JSON field is read once, so one path may not repeat another or contain it (meta vs meta.pile_set_name).
    static void CheckFieldPaths(CorpusOptions options, (string Column, string Path)[] metadata)
    {
        var paths = metadata.Select(m => m.Path).Prepend(options.TextField).ToList();
        for (int i = 0; i < paths.Count; i++)
            for (int j = i + 1; j < paths.Count; j++)
                if (paths[i] == paths[j] || paths[j].StartsWith(paths[i] + ".", StringComparison.Ordinal) || paths[i].StartsWith(paths[j] + ".", StringComparison.Ordinal))
                    throw new ArgumentException($"Fields '{paths[i]}' and '{paths[j]}' overlap: read each JSON field once (the text field included).");
        var columns = metadata.Select(m => m.Column).Prepend(options.TextColumnName).ToList();
        var duplicate = columns.GroupBy(c => c).FirstOrDefault(g => g.Count() > 1);
        if (duplicate != null) throw new ArgumentException($"Column name '{duplicate.Key}' is used twice.");
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
