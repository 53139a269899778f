using System.Text;
using System.Text.Json;

namespace MLNetFinetune.Data;

/// <summary>One streaming pass over a corpus's files, document by document.</summary>
internal sealed class CorpusReader : IDisposable
{
    readonly CorpusOptions _options;
    readonly IReadOnlyList<string> _files;
    readonly IReadOnlyList<(string Column, string Path)> _metadata;
    readonly SkippedRecords _skipped = new();
    readonly StringBuilder _document = new();
    readonly string[][] _paths;      // text field first, then the metadata fields
    readonly string?[] _values;
    readonly JsonValueKind[] _kinds;
    int _fileIndex = -1;
    Utf8LineReader? _lines;
    bool _json;
    long _bytesOfClosedFiles;

    public CorpusReader(CorpusOptions options, IReadOnlyList<string> files, IReadOnlyList<(string Column, string Path)> metadata)
    {
        _options = options;
        _files = files;
        _metadata = metadata;
        Metadata = new string?[metadata.Count];
        _paths = [options.TextField.Split('.'), .. metadata.Select(m => m.Path.Split('.'))];
        _values = new string?[_paths.Length];
        _kinds = new JsonValueKind[_paths.Length];
    }

    public string Text { get; private set; } = "";

    /// <summary>The file the current document comes from.</summary>
    public string File => _files[_fileIndex];

    /// <summary>The line the current document starts on (provenance of what is made from it).</summary>
    public long Line { get; private set; }
    public string?[] Metadata { get; }
    public long Documents { get; private set; }
    public long Bytes => _bytesOfClosedFiles + (_lines?.BytesRead ?? 0);

    public DataLoadReport Report() => new(_options.Path, Documents, _skipped.Count, Bytes, _skipped.Reasons.ToArray());

    public bool MoveNext()
    {
        while (true)
        {
            if (_lines == null && !OpenNextFile()) return false;
            bool found = _json ? NextJsonDocument() : NextTextDocument();
            if (found)
            {
                Documents++;
                return true;
            }
            _bytesOfClosedFiles += _lines!.BytesRead;
            _lines.Dispose();
            _lines = null;
        }
    }

    bool OpenNextFile()
    {
        if (++_fileIndex >= _files.Count) return false;
        string path = _files[_fileIndex];
        _json = CheckFileType(path);
        _lines = new Utf8LineReader(DataFiles.OpenRead(path), path, _options.MaxRecordBytes);
        return true;
    }

    /// <summary>True for JSON Lines, false for text; other names fail.</summary>
    internal static bool CheckFileType(string path)
    {
        string name = DataFiles.UncompressedName(path);
        if (name.EndsWith(".jsonl", StringComparison.Ordinal) || name.EndsWith(".json", StringComparison.Ordinal)) return true;
        if (name.EndsWith(".txt", StringComparison.Ordinal)) return false;
        throw new DataFileException(path, 0, $"unsupported corpus file type (supported: {string.Join(", ", CorpusOptions.SupportedExtensions)})");
    }

    bool NextJsonDocument()
    {
        string path = _files[_fileIndex];
        while (_lines!.TryReadLine(out var line))
        {
            if (Utf8LineReader.IsBlank(line)) continue;
            try
            {
                JsonRecords.ReadFields(line, _paths, _values, _kinds, path, _lines.LineNumber);
                var kind = _kinds[0];
                if (kind != JsonValueKind.String)
                    throw new DataFileException(path, _lines.LineNumber,
                        kind == JsonValueKind.Undefined
                            ? $"no '{_options.TextField}' field (the record starts: {DataFileException.Snippet(line)})"
                            : $"field '{_options.TextField}' is {kind}, expected a string",
                        field: _options.TextField);
                string text = _values[0]!;
                if (string.IsNullOrWhiteSpace(text))
                    throw new DataFileException(path, _lines.LineNumber, $"field '{_options.TextField}' is empty", field: _options.TextField);
                Text = text;
                Line = _lines.LineNumber;
                Array.Copy(_values, 1, Metadata, 0, Metadata.Length);
                return true;
            }
            catch (DataFileException e) when (_options.OnBadRecord == BadRecordPolicy.SkipAndCount)
            {
                _skipped.Add(e);
            }
        }
        return false;
    }

    bool NextTextDocument()
    {
        var mode = _options.TextMode;
        Array.Clear(Metadata); // a folder may mix JSON and text files; text documents have no metadata
        _document.Clear();
        long firstLine = 0, bytes = 0;
        while (_lines!.TryReadLine(out var line))
        {
            bool blank = Utf8LineReader.IsBlank(line);
            if (mode == TextDocumentMode.Line)
            {
                if (blank) continue;
                Text = Encoding.UTF8.GetString(line);
                Line = _lines.LineNumber;
                return true;
            }
            if (blank && mode == TextDocumentMode.Paragraph)
            {
                if (_document.Length > 0) break;
                continue;
            }
            if (firstLine == 0) firstLine = _lines.LineNumber;
            if (_document.Length > 0) _document.Append('\n');
            _document.Append(Encoding.UTF8.GetString(line));
            bytes += line.Length + 1;
            if (bytes > _options.MaxRecordBytes)
                throw new DataFileException(_files[_fileIndex], firstLine,
                    $"{(mode == TextDocumentMode.File ? "file" : "paragraph")} is longer than the limit of {_options.MaxRecordBytes:N0} bytes (raise MaxRecordBytes if this is intended)");
        }
        if (mode == TextDocumentMode.File) TrimTrailingBlankLines();
        if (_document.Length == 0 || string.IsNullOrWhiteSpace(Text = _document.ToString())) return false;
        Line = firstLine;
        return true;
    }

    void TrimTrailingBlankLines()
    {
        int end = _document.Length;
        while (end > 0 && char.IsWhiteSpace(_document[end - 1])) end--;
        _document.Length = end;
    }

    public void Dispose() => _lines?.Dispose();
}
