using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNetFinetune.Data;

/// <summary>Options for writing JSON Lines.</summary>
public sealed class JsonlWriteOptions
{
    /// <summary>Columns to write, in this order; null (default) writes every visible column in schema order.</summary>
    public IReadOnlyList<string>? Columns { get; init; }

    /// <summary>Write non-ASCII characters as they are (default) rather than as <c>\uXXXX</c> escapes.</summary>
    public bool KeepUnicode { get; init; } = true;
}

/// <summary>Writes any <see cref="IDataView"/> (a <see cref="Microsoft.Data.Analysis.DataFrame"/> included) as JSON Lines, one object per row.</summary>
public static class JsonlWriter
{
    /// <summary>Writes to a file atomically (a temporary file renamed at the end); <c>.gz</c> and <c>.zst</c> names compress. Returns the rows written.</summary>
    public static long Write(IDataView data, string path, JsonlWriteOptions? options = null)
    {
        long rows = 0;
        DataFiles.WriteAtomically(path, stream => rows = Write(data, stream, options));
        return rows;
    }

    /// <summary>Writes to a stream; text as strings, numbers and booleans as JSON values, vectors as arrays, NaN as null.</summary>
    public static long Write(IDataView data, Stream stream, JsonlWriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(data);
        options ??= new JsonlWriteOptions();
        var columns = options.Columns == null
            ? data.Schema.Where(c => !c.IsHidden).ToArray()
            : options.Columns.Select(name => data.Schema.GetColumnOrNull(name) ?? throw new ArgumentOutOfRangeException(nameof(options),
                $"Column '{name}' does not exist. Columns: {DataViews.SchemaShapes.Names(data.Schema)}.")).ToArray();

        var jsonOptions = new JsonWriterOptions
        {
            Encoder = options.KeepUnicode ? JavaScriptEncoder.UnsafeRelaxedJsonEscaping : JavaScriptEncoder.Default,
            SkipValidation = true,
        };
        using var writer = new Utf8JsonWriter(stream, jsonOptions);
        using var cursor = data.GetRowCursor(columns);
        var writers = columns.Select(c => MakeWriter(cursor, c)).ToArray();
        long rows = 0;
        while (cursor.MoveNext())
        {
            writer.WriteStartObject();
            for (int i = 0; i < columns.Length; i++)
            {
                writer.WritePropertyName(columns[i].Name);
                writers[i](writer);
            }
            writer.WriteEndObject();
            writer.Flush();
            stream.WriteByte((byte)'\n');
            writer.Reset();
            rows++;
        }
        return rows;
    }

    static Action<Utf8JsonWriter> MakeWriter(DataViewRow row, DataViewSchema.Column column)
    {
        DataViewType type = column.Type;
        if (type is VectorDataViewType vector)
        {
            var item = ItemWriter(vector.ItemType, column);
            return (Action<Utf8JsonWriter>)typeof(JsonlWriter).GetMethod(nameof(VectorWriter), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(vector.ItemType.RawType).Invoke(null, [row, column, item])!;
        }
        var write = ItemWriter(type, column);
        return (Action<Utf8JsonWriter>)typeof(JsonlWriter).GetMethod(nameof(ScalarWriter), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(type.RawType).Invoke(null, [row, column, write])!;
    }

    static Action<Utf8JsonWriter> ScalarWriter<T>(DataViewRow row, DataViewSchema.Column column, Delegate write)
    {
        var getter = row.GetGetter<T>(column);
        var typed = (Action<Utf8JsonWriter, T>)write;
        T value = default!;
        return w => { getter(ref value); typed(w, value); };
    }

    static Action<Utf8JsonWriter> VectorWriter<T>(DataViewRow row, DataViewSchema.Column column, Delegate write)
    {
        var getter = row.GetGetter<VBuffer<T>>(column);
        var typed = (Action<Utf8JsonWriter, T>)write;
        VBuffer<T> value = default;
        return w =>
        {
            getter(ref value);
            w.WriteStartArray();
            foreach (var item in value.DenseValues()) typed(w, item);
            w.WriteEndArray();
        };
    }

    // One writer per item type; key types are written as their underlying integer.
    static Delegate ItemWriter(DataViewType type, DataViewSchema.Column column) => type.RawType switch
    {
        var t when t == typeof(ReadOnlyMemory<char>) => (Action<Utf8JsonWriter, ReadOnlyMemory<char>>)((w, v) => w.WriteStringValue(v.Span)),
        var t when t == typeof(bool) => (Action<Utf8JsonWriter, bool>)((w, v) => w.WriteBooleanValue(v)),
        var t when t == typeof(float) => (Action<Utf8JsonWriter, float>)((w, v) => { if (float.IsFinite(v)) w.WriteNumberValue(v); else w.WriteNullValue(); }),
        var t when t == typeof(double) => (Action<Utf8JsonWriter, double>)((w, v) => { if (double.IsFinite(v)) w.WriteNumberValue(v); else w.WriteNullValue(); }),
        var t when t == typeof(sbyte) => (Action<Utf8JsonWriter, sbyte>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(short) => (Action<Utf8JsonWriter, short>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(int) => (Action<Utf8JsonWriter, int>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(long) => (Action<Utf8JsonWriter, long>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(byte) => (Action<Utf8JsonWriter, byte>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(ushort) => (Action<Utf8JsonWriter, ushort>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(uint) => (Action<Utf8JsonWriter, uint>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(ulong) => (Action<Utf8JsonWriter, ulong>)((w, v) => w.WriteNumberValue(v)),
        var t when t == typeof(DateTime) => (Action<Utf8JsonWriter, DateTime>)((w, v) => w.WriteStringValue(v)),
        var t when t == typeof(DateTimeOffset) => (Action<Utf8JsonWriter, DateTimeOffset>)((w, v) => w.WriteStringValue(v)),
        var t when t == typeof(TimeSpan) => (Action<Utf8JsonWriter, TimeSpan>)((w, v) => w.WriteStringValue(v.ToString("c"))),
        _ => throw new NotSupportedException($"Column '{column.Name}' has type {type}, which JSON Lines output does not support."),
    };
}
