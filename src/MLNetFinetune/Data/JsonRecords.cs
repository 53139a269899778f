using System.Text.Json;

namespace MLNetFinetune.Data;

/// <summary>Parsing one JSON Lines record and reading fields from it by dotted path (<c>meta.pile_set_name</c>).</summary>
internal static class JsonRecords
{
    /// <summary>Parses a line that must hold one JSON object; the error names file, line and a snippet.</summary>
    public static JsonDocument ParseObject(ReadOnlySpan<byte> line, string path, long lineNumber)
    {
        var reader = new Utf8JsonReader(line, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
        JsonDocument document;
        try
        {
            document = JsonDocument.ParseValue(ref reader);
            if (reader.Read())
                throw new DataFileException(path, lineNumber,
                    $"malformed JSON: more than one value on the line (at column {reader.TokenStartIndex + 1}): {DataFileException.Snippet(line)}");
        }
        catch (JsonException e)
        {
            throw new DataFileException(path, lineNumber,
                $"malformed JSON ({Reason(e)}, at column {e.BytePositionInLine + 1}): {DataFileException.Snippet(line)}", inner: e);
        }
        if (document.RootElement.ValueKind != JsonValueKind.Object)
        {
            var kind = document.RootElement.ValueKind;
            document.Dispose();
            throw new DataFileException(path, lineNumber, $"expected a JSON object, found {kind}: {DataFileException.Snippet(line)}");
        }
        return document;
    }

    /// <summary>
    /// The value at a dotted path: strings as they are, other values as their JSON text; null when the path
    /// is missing or the value is JSON null.
    /// </summary>
    public static string? GetText(JsonElement root, string dottedPath)
    {
        JsonElement current = root;
        foreach (var segment in dottedPath.Split('.'))
        {
            if (current.ValueKind != JsonValueKind.Object || !current.TryGetProperty(segment, out current)) return null;
        }
        return ToText(current);
    }

    /// <summary>A string as it is, another value as its JSON text, JSON null as null.</summary>
    public static string? ToText(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        _ => value.GetRawText(),
    };

    /// <summary>The kind of the value at a dotted path, Undefined when missing.</summary>
    public static JsonValueKind KindAt(JsonElement root, string dottedPath)
    {
        JsonElement current = root;
        foreach (var segment in dottedPath.Split('.'))
        {
            if (current.ValueKind != JsonValueKind.Object || !current.TryGetProperty(segment, out current)) return JsonValueKind.Undefined;
        }
        return current.ValueKind;
    }

    // System.Text.Json messages end with "LineNumber: 0 | BytePositionInLine: 12."; the position is reported separately.
    static string Reason(JsonException e)
    {
        string m = e.Message;
        int cut = m.IndexOf(" Path:", StringComparison.Ordinal);
        if (cut < 0) cut = m.IndexOf(" LineNumber:", StringComparison.Ordinal);
        return (cut > 0 ? m[..cut] : m).TrimEnd('.', ' ');
    }
}
