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
        }
        catch (JsonException e)
        {
            throw Malformed(e, line, path, lineNumber);
        }
        try
        {
            reader.Read(); // throws on anything but whitespace after the object
        }
        catch (JsonException e)
        {
            document.Dispose();
            throw Malformed(e, line, path, lineNumber);
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
    /// Reads only the fields at <paramref name="paths"/> (each a dotted path split into segments) from a line holding
    /// one JSON object, skipping everything else without building a document: the corpus hot path, where a
    /// <see cref="JsonDocument"/> per line costs a third of the throughput. Values as in <see cref="ToText(JsonElement)"/>;
    /// <paramref name="kinds"/> gets each value's kind (Undefined when missing).
    /// </summary>
    public static void ReadFields(ReadOnlySpan<byte> line, string[][] paths, string?[] values, JsonValueKind[] kinds, string path, long lineNumber)
    {
        Array.Clear(values);
        Array.Fill(kinds, JsonValueKind.Undefined);
        var reader = new Utf8JsonReader(line);
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                throw new DataFileException(path, lineNumber, $"expected a JSON object, found {Describe(reader.TokenType)}: {DataFileException.Snippet(line)}");
            var open = new List<string>(); // property names of the objects we descended into
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.EndObject)
                {
                    if (open.Count == 0) break;
                    open.RemoveAt(open.Count - 1);
                    continue;
                }
                string name = reader.GetString()!;
                reader.Read();
                int match = Match(paths, open, name, out bool isPrefix);
                if (match >= 0)
                {
                    kinds[match] = KindOf(reader.TokenType);
                    values[match] = reader.TokenType switch
                    {
                        JsonTokenType.String => reader.GetString(),
                        JsonTokenType.Null => null,
                        JsonTokenType.StartObject or JsonTokenType.StartArray => JsonElement.ParseValue(ref reader).GetRawText(),
                        _ => System.Text.Encoding.UTF8.GetString(reader.ValueSpan),
                    };
                }
                else if (isPrefix && reader.TokenType == JsonTokenType.StartObject) open.Add(name);
                else reader.Skip();
            }
            reader.Read(); // throws on anything but whitespace after the object
        }
        catch (JsonException e)
        {
            throw Malformed(e, line, path, lineNumber);
        }
        catch (InvalidOperationException e)
        {
            throw InvalidString(e, line, path, lineNumber);
        }
    }

    /// <summary>A value as text (see <see cref="ToText(JsonElement)"/>); a lone surrogate escape (<c>"\ud800"</c>, seen in web corpora) fails with the location.</summary>
    public static string? ToText(JsonElement value, string path, long lineNumber)
    {
        try
        {
            return ToText(value);
        }
        catch (InvalidOperationException e)
        {
            throw InvalidString(e, [], path, lineNumber);
        }
    }

    static DataFileException Malformed(JsonException e, ReadOnlySpan<byte> line, string path, long lineNumber) =>
        new(path, lineNumber, $"malformed JSON ({DataFileException.JsonReason(e)}, at column {e.BytePositionInLine + 1}): {DataFileException.Snippet(line)}", inner: e);

    // Utf8JsonReader.GetString throws InvalidOperationException for escapes that are not valid UTF-16 (lone surrogates).
    static DataFileException InvalidString(InvalidOperationException e, ReadOnlySpan<byte> line, string path, long lineNumber) =>
        new(path, lineNumber, $"a JSON string cannot be read as text ({e.Message.TrimEnd('.')}){(line.IsEmpty ? "" : ": " + DataFileException.Snippet(line))}", inner: e);

    // The path that open + name completes (or -1), and whether open + name starts a longer path.
    static int Match(string[][] paths, List<string> open, string name, out bool isPrefix)
    {
        isPrefix = false;
        for (int p = 0; p < paths.Length; p++)
        {
            string[] segments = paths[p];
            if (segments.Length <= open.Count || segments[open.Count] != name) continue;
            bool same = true;
            for (int i = 0; i < open.Count && same; i++) same = segments[i] == open[i];
            if (!same) continue;
            if (segments.Length == open.Count + 1) return p;
            isPrefix = true;
        }
        return -1;
    }

    static JsonValueKind KindOf(JsonTokenType token) => token switch
    {
        JsonTokenType.String => JsonValueKind.String,
        JsonTokenType.Number => JsonValueKind.Number,
        JsonTokenType.True => JsonValueKind.True,
        JsonTokenType.False => JsonValueKind.False,
        JsonTokenType.Null => JsonValueKind.Null,
        JsonTokenType.StartObject => JsonValueKind.Object,
        JsonTokenType.StartArray => JsonValueKind.Array,
        _ => JsonValueKind.Undefined,
    };

    static string Describe(JsonTokenType token) => token switch
    {
        JsonTokenType.StartArray => "Array",
        JsonTokenType.String => "String",
        JsonTokenType.Number => "Number",
        JsonTokenType.True or JsonTokenType.False => "Boolean",
        JsonTokenType.Null => "Null",
        _ => token.ToString(),
    };

    /// <summary>A string as it is, another value as its JSON text, JSON null as null.</summary>
    public static string? ToText(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.String => value.GetString(),
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        _ => value.GetRawText(),
    };
}
