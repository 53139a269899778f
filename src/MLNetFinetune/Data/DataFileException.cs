using System.Text.Json;

namespace MLNetFinetune.Data;

/// <summary>
/// Bad input in a data file: says which file, which line (1-based; 0 when the problem is not tied to a line),
/// and where applicable the byte offset in the (decompressed) file and the field.
/// </summary>
public sealed class DataFileException : IOException
{
    /// <summary>Creates the exception; the message is prefixed with <c>path:line:</c>.</summary>
    public DataFileException(string filePath, long line, string problem, long? byteOffset = null, string? field = null, Exception? inner = null)
        : base(Describe(filePath, line, problem), inner)
    {
        FilePath = filePath;
        Line = line;
        Problem = problem;
        ByteOffset = byteOffset;
        Field = field;
    }

    /// <summary>The file that holds the bad input.</summary>
    public string FilePath { get; }

    /// <summary>1-based line number, or 0 when the problem concerns the whole file.</summary>
    public long Line { get; }

    /// <summary>What is wrong, without the location prefix.</summary>
    public string Problem { get; }

    /// <summary>Byte offset from the start of the (decompressed) file, when known.</summary>
    public long? ByteOffset { get; }

    /// <summary>The field or column concerned, when there is one.</summary>
    public string? Field { get; }

    static string Describe(string path, long line, string problem) => line > 0 ? $"{path}:{line}: {problem}" : $"{path}: {problem}";

    /// <summary>
    /// A whole-file JSON document (a config, a trainer state) that does not parse or bind: "malformed <paramref name="what"/>
    /// (reason[; at $.json.path])" on the line System.Text.Json reports.
    /// </summary>
    public static DataFileException MalformedJson(string filePath, string what, JsonException e, bool withJsonPath = false) =>
        new(filePath, (e.LineNumber ?? -1) + 1, $"malformed {what} ({JsonReason(e)}{(withJsonPath && e.Path != null ? $"; at {e.Path}" : "")})", inner: e);

    // System.Text.Json messages end with "Path: … | LineNumber: 0 | BytePositionInLine: 12."; the position is reported separately.
    internal static string JsonReason(JsonException e)
    {
        string m = e.Message;
        int cut = m.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (cut > 0 ? m[..cut] : m).TrimEnd('.', ' ');
    }

    /// <summary>A short, single-line excerpt of a record for error messages.</summary>
    internal static string Snippet(ReadOnlySpan<byte> utf8, int maxChars = 60)
    {
        string text = System.Text.Encoding.UTF8.GetString(utf8[..Math.Min(utf8.Length, maxChars * 4)]);
        text = text.ReplaceLineEndings(" ");
        return text.Length <= maxChars ? text : text[..maxChars] + "…";
    }
}

/// <summary>What a loader does with a record it cannot read.</summary>
public enum BadRecordPolicy
{
    /// <summary>Stop with a <see cref="DataFileException"/> naming the file and line (default).</summary>
    Fail,
    /// <summary>Skip the record and count it; the count is reported in <see cref="DataLoadReport"/> and the ML.NET log.</summary>
    SkipAndCount,
}

/// <summary>Counts the records skipped under <see cref="BadRecordPolicy.SkipAndCount"/> and keeps the first reasons.</summary>
internal sealed class SkippedRecords
{
    const int ReasonsKept = 5;
    readonly List<string> _reasons = [];

    public long Count { get; private set; }

    public IReadOnlyList<string> Reasons => _reasons;

    public void Add(DataFileException e)
    {
        Count++;
        if (_reasons.Count < ReasonsKept) _reasons.Add(e.Message);
    }
}

/// <summary>What one pass over a data source read, and what it skipped.</summary>
/// <param name="Source">The path, folder or glob that was read.</param>
/// <param name="Records">Records (documents or pairs) delivered.</param>
/// <param name="Skipped">Records skipped under <see cref="BadRecordPolicy.SkipAndCount"/>.</param>
/// <param name="Bytes">Bytes of (decompressed) input read.</param>
/// <param name="SkipReasons">The first few skip reasons, each with file and line.</param>
public sealed record DataLoadReport(string Source, long Records, long Skipped, long Bytes, IReadOnlyList<string> SkipReasons)
{
    /// <inheritdoc />
    public override string ToString() => Skipped == 0
        ? $"{Source}: {Records:N0} records, {Bytes:N0} bytes"
        : $"{Source}: {Records:N0} records, {Skipped:N0} skipped (first: {SkipReasons[0]})";
}
