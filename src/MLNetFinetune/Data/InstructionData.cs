using System.Globalization;
using System.Text;
using System.Text.Json;
using CsvHelper;
using CsvHelper.Configuration;
using Microsoft.Data.Analysis;
using Microsoft.ML.Runtime;

namespace MLNetFinetune.Data;

/// <summary>The common layouts of instruction datasets, each a fixed set of fields.</summary>
public enum InstructionLayout
{
    /// <summary>Detect from the fields of the first record (or the CSV header).</summary>
    Auto,
    /// <summary><c>question</c>, <c>answer</c> (lamini_docs style).</summary>
    QuestionAnswer,
    /// <summary><c>instruction</c>, <c>input</c> (optional), <c>output</c> (Stanford Alpaca).</summary>
    Alpaca,
    /// <summary><c>prompt</c>, <c>completion</c>.</summary>
    PromptCompletion,
    /// <summary>
    /// <c>messages</c>: a conversation, a list of <c>{"role", "content"}</c> objects (TRL's conversational format), kept
    /// as a column of compact JSON; a chat template turns it into training text (<see cref="ChatTemplates.ConversationPairs"/>).
    /// </summary>
    Conversation,
}

/// <summary>Options for loading instruction data.</summary>
public sealed class InstructionDataOptions
{
    /// <summary>The layout; <see cref="InstructionLayout.Auto"/> (default) detects it from the field names.</summary>
    public InstructionLayout Layout { get; init; } = InstructionLayout.Auto;

    /// <summary>
    /// Renames the file's fields to the layout's: <c>{ ["Q"] = "question", ["A"] = "answer" }</c> for a file with
    /// fields Q and A. Applied before the layout is detected or checked.
    /// </summary>
    public IReadOnlyDictionary<string, string> FieldMap { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// Further text fields to keep as columns after the layout's (a category, an id to group results by); every record
    /// must have them. Default none.
    /// </summary>
    public IReadOnlyList<string> ExtraFields { get; init; } = [];

    /// <summary>Malformed records and records missing a required field or with an empty one: fail (default) or skip and count.</summary>
    public BadRecordPolicy OnBadRecord { get; init; } = BadRecordPolicy.Fail;

    /// <summary>The longest line accepted, in bytes; longer lines fail instead of exhausting memory. Default 16 MiB.</summary>
    public int MaxRecordBytes { get; init; } = 16 << 20;

    /// <summary>Receives the load report (pairs read, records skipped).</summary>
    public IProgress<DataLoadReport>? Progress { get; init; }
}

/// <summary>Loads instruction datasets (question/answer, Alpaca, prompt/completion) from JSONL or CSV into a <see cref="DataFrame"/> of text columns.</summary>
public static class InstructionData
{
    /// <summary>The fields of each layout, required ones first; Alpaca's <c>input</c> may be missing or empty.</summary>
    public static IReadOnlyList<string> FieldsOf(InstructionLayout layout) => layout switch
    {
        InstructionLayout.QuestionAnswer => ["question", "answer"],
        InstructionLayout.Alpaca => ["instruction", "input", "output"],
        InstructionLayout.PromptCompletion => ["prompt", "completion"],
        InstructionLayout.Conversation => ["messages"],
        _ => throw new ArgumentOutOfRangeException(nameof(layout), layout, "Auto has no fixed fields; detect the layout first."),
    };

    /// <summary>The built-in prompt format that fits a layout (the course's, answer on a new line, for question/answer).</summary>
    public static PromptFormat TemplateFor(InstructionLayout layout) => layout switch
    {
        InstructionLayout.QuestionAnswer => PromptTemplates.QuestionAnswer,
        InstructionLayout.Alpaca => PromptTemplates.Alpaca,
        InstructionLayout.PromptCompletion => PromptTemplates.PromptCompletion,
        InstructionLayout.Conversation => throw new ArgumentException("Conversations are rendered with the model's chat template, not a prompt format.", nameof(layout)),
        _ => throw new ArgumentOutOfRangeException(nameof(layout), layout, "Detect the layout first."),
    };

    /// <summary>The layout whose required fields a record has, or null.</summary>
    public static InstructionLayout? DetectLayout(IEnumerable<string> fields)
    {
        var set = fields.ToHashSet(StringComparer.Ordinal);
        foreach (var layout in new[] { InstructionLayout.QuestionAnswer, InstructionLayout.Alpaca, InstructionLayout.PromptCompletion, InstructionLayout.Conversation })
            if (FieldsOf(layout).Where(f => !IsOptional(layout, f)).All(set.Contains)) return layout;
        return null;
    }

    /// <summary>Loads by extension: <c>.jsonl</c>/<c>.json</c> (optionally .gz/.zst) or <c>.csv</c>.</summary>
    public static DataFrame Load(string path, InstructionDataOptions? options = null) => Load(path, options, log: null);

    /// <summary>Loads a JSON Lines file of pairs (one object per line).</summary>
    public static DataFrame LoadJsonl(string path, InstructionDataOptions? options = null) => LoadJsonl(path, options, log: null);

    /// <summary>Loads a CSV file of pairs with a header row (RFC 4180 quoting; fields may span lines).</summary>
    public static DataFrame LoadCsv(string path, InstructionDataOptions? options = null) => LoadCsv(path, options, log: null);

    internal static DataFrame Load(string path, InstructionDataOptions? options, IChannelProvider? log) => Load(path, options, log, fixedFields: null, recordLines: null);

    /// <summary>
    /// Loads records that hold <paramref name="fields"/> (a prompt template's inputs, whatever the layout), each of them
    /// required and non-empty; <paramref name="lines"/> receives every loaded record's line in the file.
    /// </summary>
    internal static DataFrame LoadFields(string path, IReadOnlyList<string> fields, List<long> lines) =>
        Load(path, new InstructionDataOptions(), log: null, fields, lines);

    static DataFrame Load(string path, InstructionDataOptions? options, IChannelProvider? log, IReadOnlyList<string>? fixedFields, List<long>? recordLines)
    {
        string name = DataFiles.UncompressedName(path);
        if (name.EndsWith(".csv", StringComparison.Ordinal)) return LoadCsv(path, options, log, fixedFields, recordLines);
        if (name.EndsWith(".jsonl", StringComparison.Ordinal) || name.EndsWith(".json", StringComparison.Ordinal)) return LoadJsonl(path, options, log, fixedFields, recordLines);
        throw new ArgumentException($"'{path}': instruction data must be .jsonl, .json (JSON Lines) or .csv, optionally .gz/.zst compressed.", nameof(path));
    }

    internal static DataFrame LoadJsonl(string path, InstructionDataOptions? options, IChannelProvider? log, IReadOnlyList<string>? fixedFields = null, List<long>? recordLines = null)
    {
        options ??= new InstructionDataOptions();
        var builder = new PairsBuilder(path, options, fixedFields, recordLines);
        if (!File.Exists(path)) throw new FileNotFoundException($"Instruction data file '{path}' does not exist.", path);
        using var reader = new Utf8LineReader(DataFiles.OpenRead(path), path, options.MaxRecordBytes);
        while (reader.TryReadLine(out var line))
        {
            if (Utf8LineReader.IsBlank(line)) continue;
            long lineNumber = reader.LineNumber;
            byte[] record = line.ToArray();
            builder.Add(lineNumber, () =>
            {
                using JsonDocument document = JsonRecords.ParseObject(record, path, lineNumber);
                var fields = new Dictionary<string, FieldValue>(StringComparer.Ordinal);
                foreach (var property in document.RootElement.EnumerateObject())
                    fields[property.Name] = property.Value.ValueKind is JsonValueKind.Object or JsonValueKind.Array
                        ? new FieldValue(null, IsText: false, Json: property.Value.ValueKind == JsonValueKind.Array ? property.Value.GetRawText() : null)
                        : new FieldValue(JsonRecords.ToText(property.Value, path, lineNumber), IsNull: property.Value.ValueKind == JsonValueKind.Null);
                return fields;
            });
        }
        return builder.Finish(reader.BytesRead, log);
    }

    internal static DataFrame LoadCsv(string path, InstructionDataOptions? options, IChannelProvider? log, IReadOnlyList<string>? fixedFields = null, List<long>? recordLines = null)
    {
        options ??= new InstructionDataOptions();
        if (!File.Exists(path)) throw new FileNotFoundException($"Instruction data file '{path}' does not exist.", path);
        // A first streaming pass gives invalid UTF-8 its line and byte offset (the decoder below only knows it failed)
        // and enforces the line limit before CsvHelper buffers anything.
        long bytes = 0;
        using (var check = new Utf8LineReader(DataFiles.OpenRead(path), path, options.MaxRecordBytes))
        {
            while (check.TryReadLine(out _)) { }
            bytes = check.BytesRead;
        }

        var builder = new PairsBuilder(path, options, fixedFields, recordLines);
        var config = new CsvConfiguration(CultureInfo.InvariantCulture)
        {
            DetectColumnCountChanges = false,
            MaxFieldSize = options.MaxRecordBytes,
            BadDataFound = bad => throw new DataFileException(path, bad.Context.Parser?.RawRow ?? 0,
                $"malformed CSV: a quote inside an unquoted field or an unterminated quoted field: {bad.RawRecord.ReplaceLineEndings(" ").Trim()}"),
        };
        using var reader = new StreamReader(DataFiles.OpenRead(path), new UTF8Encoding(false, throwOnInvalidBytes: true));
        using var csv = new CsvReader(reader, config);
        if (!csv.Read() || !csv.ReadHeader())
            throw new DataFileException(path, 0, "the file is empty: a header row naming the fields is expected");
        string[] header = csv.HeaderRecord!;
        while (true)
        {
            bool more;
            try { more = csv.Read(); }
            catch (CsvHelperException e)
            {
                throw new DataFileException(path, e.Context?.Parser?.RawRow ?? 0, $"malformed CSV: {e.Message.Split('\n')[0]}", inner: e);
            }
            if (!more) break;
            long line = csv.Parser.RawRow - (csv.Parser.RawRecord.Count(c => c == '\n') - (csv.Parser.RawRecord.EndsWith('\n') ? 1 : 0));
            var record = csv.Parser.Record!;
            builder.Add(line, () =>
            {
                if (record.Length != header.Length)
                    throw new DataFileException(path, line, $"malformed CSV: {record.Length} fields where the header has {header.Length}");
                var fields = new Dictionary<string, FieldValue>(StringComparer.Ordinal);
                for (int i = 0; i < header.Length; i++) fields[header[i]] = new FieldValue(record[i]);
                return fields;
            });
        }
        return builder.Finish(bytes, log);
    }

    static bool IsOptional(InstructionLayout layout, string field) => layout == InstructionLayout.Alpaca && field == "input";

    /// <summary>One field of a record: its text, or null with <c>IsText</c> false for an object or array.</summary>
    /// <summary>A field's text; for an array field, its JSON.</summary>
    internal readonly record struct FieldValue(string? Text, bool IsText = true, bool IsNull = false, string? Json = null);

    /// <summary>
    /// Accumulates validated pairs into string columns, applying the field map, the layout (or the fixed fields asked
    /// for) and the bad-record policy; <paramref name="lines"/>, when given, gets each kept record's line.
    /// </summary>
    sealed class PairsBuilder(string path, InstructionDataOptions options, IReadOnlyList<string>? fixedFields, List<long>? lines)
    {
        readonly SkippedRecords _skipped = new();
        InstructionLayout _layout = options.Layout;
        IReadOnlyList<string> _fields = [];
        List<string>[] _values = [];

        public void Add(long line, Func<Dictionary<string, FieldValue>> read)
        {
            var fields = new Dictionary<string, FieldValue>(StringComparer.Ordinal);
            try
            {
                foreach (var (name, value) in read()) fields[options.FieldMap.TryGetValue(name, out var mapped) ? mapped : name] = value;
            }
            catch (DataFileException e) when (options.OnBadRecord == BadRecordPolicy.SkipAndCount)
            {
                Skip(e);
                return;
            }
            if (_fields.Count == 0) ChooseLayout(fields.Keys, line); // a file of the wrong layout fails whatever the policy
            try
            {
                var row = new string[_fields.Count];
                for (int i = 0; i < _fields.Count; i++)
                {
                    string field = _fields[i];
                    bool present = fields.TryGetValue(field, out var value);
                    if (_layout == InstructionLayout.Conversation && field == "messages")
                    {
                        row[i] = present && value.Json is { } json ? Conversations.Check(json, path, line)
                            : throw new DataFileException(path, line, !present ? $"missing field 'messages' (the record has: {string.Join(", ", fields.Keys)})"
                                : "field 'messages' must be a list of {\"role\", \"content\"} objects", field: field);
                        continue;
                    }
                    if (present && !value.IsText)
                        throw new DataFileException(path, line, $"field '{field}' is an object or array; it must be text", field: field);
                    if (string.IsNullOrWhiteSpace(value.Text) && !IsOptional(_layout, field))
                        throw new DataFileException(path, line,
                            !present ? $"missing field '{field}' (the record has: {string.Join(", ", fields.Keys)})"
                            : value.IsNull ? $"field '{field}' is null" : $"field '{field}' is empty",
                            field: field);
                    row[i] = value.Text ?? "";
                }
                for (int i = 0; i < row.Length; i++) _values[i].Add(row[i]);
                lines?.Add(line);
            }
            catch (DataFileException e) when (options.OnBadRecord == BadRecordPolicy.SkipAndCount)
            {
                Skip(e);
            }
        }

        void Skip(DataFileException e) => _skipped.Add(e);

        void ChooseLayout(IEnumerable<string> fields, long line)
        {
            if (fixedFields != null)
            {
                _fields = fixedFields;
                _values = _fields.Select(_ => new List<string>()).ToArray();
                return;
            }
            if (_layout == InstructionLayout.Auto)
                _layout = DetectLayout(fields) ?? throw new DataFileException(path, line,
                    $"cannot tell the layout from the fields ({string.Join(", ", fields)}): expected question/answer, " +
                    "instruction/input/output, prompt/completion or messages; map other names with InstructionDataOptions.FieldMap");
            _fields = FieldsOf(_layout).Concat(options.ExtraFields.Except(FieldsOf(_layout))).ToArray();
            _values = _fields.Select(_ => new List<string>()).ToArray();
        }

        public DataFrame Finish(long bytes, IChannelProvider? log)
        {
            if (_fields.Count == 0)
                throw new DataFileException(path, 0, _skipped.Count == 0 ? "the file holds no records"
                    : $"no usable records: all {_skipped.Count:N0} were skipped (first: {_skipped.Reasons[0]})");
            long records = _values[0].Count;
            var report = new DataLoadReport(path, records, _skipped.Count, bytes, _skipped.Reasons.ToArray());
            options.Progress?.Report(report);
            if (log != null)
            {
                using var channel = log.Start("InstructionData");
                if (_skipped.Count > 0) channel.Warning(MessageSensitivity.None, report.ToString());
                else channel.Info(MessageSensitivity.None, report.ToString());
            }
            if (records == 0)
                throw new DataFileException(path, 0, $"no usable records: all {_skipped.Count:N0} were skipped (first: {_skipped.Reasons[0]})");
            return new DataFrame(_fields.Select((f, i) => (DataFrameColumn)new StringDataFrameColumn(f, _values[i])));
        }
    }
}
