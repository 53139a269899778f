using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.Data;

namespace MLNetFinetune.ModelFiles;

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">The parameter name (e.g. <c>gpt_neox.embed_in.weight</c>).</param>
/// <param name="DType">safetensors dtype: F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL.</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Begin">Start of the bytes, relative to the data section.</param>
/// <param name="End">End (exclusive) of the bytes.</param>
public sealed record SafeTensorInfo(string Name, string DType, long[] Shape, long Begin, long End)
{
    /// <summary>Number of elements.</summary>
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>
/// Reads and writes the safetensors format (an 8-byte header length, a JSON header naming each tensor's dtype,
/// shape and byte range, then the raw little-endian data), the weight format of Hugging Face checkpoints.
/// No served .NET package reads it without libtorch, and the format is a page long, so it is implemented here;
/// the core needs it to export and serve models without TorchSharp.
/// </summary>
public sealed class SafeTensorsFile : IDisposable
{
    readonly FileStream _file;
    readonly long _dataStart;

    SafeTensorsFile(string path, FileStream file, long dataStart, Dictionary<string, SafeTensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Path = path;
        _file = file;
        _dataStart = dataStart;
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>The tensors by name.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }

    /// <summary>The header's <c>__metadata__</c> strings.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    static readonly Dictionary<string, int> ElementSizes = new()
    {
        ["F64"] = 8, ["F32"] = 4, ["F16"] = 2, ["BF16"] = 2, ["I64"] = 8, ["I32"] = 4, ["I16"] = 2, ["I8"] = 1, ["U8"] = 1, ["BOOL"] = 1,
    };

    /// <summary>Opens a file and checks its header: every range inside the data, sized for its dtype and shape, none overlapping.</summary>
    public static SafeTensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Weights file '{path}' does not exist.", path);
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.RandomAccess);
        try
        {
            Span<byte> lengthBytes = stackalloc byte[8];
            if (file.Length < 8 || file.Read(lengthBytes) != 8) throw Bad(path, "the file is shorter than the 8-byte header length");
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(lengthBytes);
            if (headerLength > (ulong)(file.Length - 8) || headerLength > 100_000_000)
                throw Bad(path, $"the header claims {headerLength:N0} bytes but the file has {file.Length - 8:N0} after the length; not a safetensors file?");
            var header = new byte[headerLength];
            file.ReadExactly(header);
            long dataStart = 8 + (long)headerLength, dataLength = file.Length - dataStart;

            if (!System.Text.Unicode.Utf8.IsValid(header))
                throw Bad(path, $"the header holds invalid UTF-8 at byte offset {8 + Utf8LineReader.FirstInvalidByte(header)}");
            JsonObject root;
            try
            {
                // A repeated tensor name would otherwise surface as an ArgumentException when the header is first read.
                root = JsonNode.Parse(header, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false }) as JsonObject
                    ?? throw Bad(path, "the header is not a JSON object");
            }
            catch (JsonException e)
            {
                throw Bad(path, $"the header is malformed JSON ({e.Message.Split(" LineNumber:")[0].TrimEnd('.')})");
            }
            catch (InvalidOperationException e)
            {
                // The duplicate-name check reads each name, and a lone surrogate escape ("\ud800") is not UTF-16.
                throw new DataFileException(path, 0, $"the header holds unexpected content: {e.Message.TrimEnd('.')}", inner: e);
            }
            try
            {
                return Read(path, file, root, dataStart, dataLength);
            }
            catch (Exception e) when (e is InvalidOperationException or FormatException)
            {
                // A name or a metadata string that is not UTF-16 (a lone "\ud800" escape), or a __metadata__ of the wrong kind.
                throw new DataFileException(path, 0, $"the header holds unexpected content: {e.Message.TrimEnd('.')}", inner: e);
            }
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    static SafeTensorsFile Read(string path, FileStream file, JsonObject root, long dataStart, long dataLength)
    {
        var tensors = new Dictionary<string, SafeTensorInfo>(StringComparer.Ordinal);
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (name, node) in root)
        {
            if (name == "__metadata__")
            {
                if (node is JsonObject meta)
                    foreach (var (k, v) in meta) metadata[k] = v?.ToString() ?? "";
                continue;
            }
            try
            {
                string dtype = node!["dtype"]!.GetValue<string>();
                long[] shape = node["shape"]!.AsArray().Select(d => d!.GetValue<long>()).ToArray();
                var offsets = node["data_offsets"]!.AsArray();
                var info = new SafeTensorInfo(name, dtype, shape, offsets[0]!.GetValue<long>(), offsets[1]!.GetValue<long>());
                if (!ElementSizes.TryGetValue(dtype, out int size)) throw Bad(path, $"tensor '{name}' has unknown dtype \"{dtype}\"");
                if (info.Begin < 0 || info.End < info.Begin || info.End > dataLength)
                    throw Bad(path, $"tensor '{name}' spans bytes {info.Begin}..{info.End}, outside the {dataLength:N0}-byte data section (truncated file?)");
                if (shape.Any(d => d < 0)) throw Bad(path, $"tensor '{name}' has a negative dimension in [{string.Join(", ", shape)}]");
                // Checked: a shape whose product wraps around could otherwise match the range by accident.
                long bytes = shape.Aggregate((long)size, (a, d) => checked(a * d));
                if (bytes != info.End - info.Begin)
                    throw Bad(path, $"tensor '{name}' is {dtype} [{string.Join(", ", shape)}] = {bytes:N0} bytes, but its range holds {info.End - info.Begin:N0}");
                tensors[name] = info;
            }
            catch (Exception e) when (e is NullReferenceException or InvalidOperationException or FormatException or ArgumentOutOfRangeException)
            {
                throw Bad(path, $"tensor '{name}' lacks a valid dtype, shape or data_offsets");
            }
            catch (OverflowException)
            {
                throw Bad(path, $"tensor '{name}' has a shape whose size overflows 64 bits");
            }
        }
        var ordered = tensors.Values.Where(t => t.End > t.Begin).OrderBy(t => t.Begin).ToList(); // an empty tensor overlaps nothing
        for (int i = 1; i < ordered.Count; i++)
            if (ordered[i].Begin < ordered[i - 1].End)
                throw Bad(path, $"tensors '{ordered[i - 1].Name}' and '{ordered[i].Name}' overlap");
        return new SafeTensorsFile(path, file, dataStart, tensors, metadata);
    }

    /// <summary>The raw bytes of a tensor.</summary>
    public byte[] ReadBytes(string name)
    {
        var info = Get(name);
        var bytes = new byte[info.End - info.Begin];
        _file.Position = _dataStart + info.Begin;
        _file.ReadExactly(bytes);
        return bytes;
    }

    /// <summary>A floating-point tensor as float32 (F32 as stored, F16 and BF16 widened exactly, F64 narrowed).</summary>
    public float[] ReadFloat32(string name)
    {
        var result = new float[Get(name).ElementCount];
        ReadFloat32(name, result);
        return result;
    }

    /// <summary>
    /// A floating-point tensor as float32 into <paramref name="destination"/> (exactly its element count): F32 is read
    /// straight in, 16-bit types through one pooled buffer, so a loader can reuse one array for every tensor.
    /// </summary>
    public void ReadFloat32(string name, Span<float> destination)
    {
        var info = Get(name);
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"Tensor '{name}' has {info.ElementCount} values; the destination has {destination.Length}.", nameof(destination));
        _file.Position = _dataStart + info.Begin;
        if (info.DType == "F32")
        {
            _file.ReadExactly(MemoryMarshal.AsBytes(destination));
            return;
        }
        if (info.DType is not ("F16" or "BF16" or "F64")) throw new InvalidDataException($"{Path}: tensor '{name}' is {info.DType}, not a floating-point tensor");
        long size = info.End - info.Begin;
        byte[] bytes = size <= 1 << 28 ? System.Buffers.ArrayPool<byte>.Shared.Rent((int)size) : new byte[size];
        try
        {
            _file.ReadExactly(bytes, 0, (int)size);
            var raw = bytes.AsSpan(0, (int)size);
            switch (info.DType)
            {
                case "F16":
                    var halves = MemoryMarshal.Cast<byte, Half>(raw);
                    for (int i = 0; i < halves.Length; i++) destination[i] = (float)halves[i];
                    break;
                case "BF16": // the upper half of a float32's bits
                    var bf16 = MemoryMarshal.Cast<byte, ushort>(raw);
                    for (int i = 0; i < bf16.Length; i++) destination[i] = BitConverter.Int32BitsToSingle(bf16[i] << 16);
                    break;
                default:
                    var doubles = MemoryMarshal.Cast<byte, double>(raw);
                    for (int i = 0; i < doubles.Length; i++) destination[i] = (float)doubles[i];
                    break;
            }
        }
        finally
        {
            if (size <= 1 << 28) System.Buffers.ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    SafeTensorInfo Get(string name) => Tensors.TryGetValue(name, out var info) ? info
        : throw new KeyNotFoundException($"{Path}: no tensor '{name}' (the file has {Tensors.Count} tensors, e.g. {string.Join(", ", Tensors.Keys.Order().Take(3))}).");

    /// <summary>
    /// Writes float32 tensors (and string metadata) as a safetensors file, atomically. Tensors are laid out in name
    /// order and the header is padded with spaces to a multiple of 8 bytes, as the reference writer does.
    /// </summary>
    public static void WriteFloat32(string path, IEnumerable<(string Name, long[] Shape, float[] Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var header = new JsonObject();
        if (metadata != null) header["__metadata__"] = new JsonObject(metadata.Select(m => KeyValuePair.Create(m.Key, (JsonNode?)m.Value)));
        long offset = 0;
        foreach (var (name, shape, data) in list)
        {
            long count = shape.Aggregate(1L, (a, b) => a * b);
            if (count != data.Length) throw new ArgumentException($"Tensor '{name}' has shape [{string.Join(", ", shape)}] but {data.Length} values.");
            header[name] = new JsonObject
            {
                ["dtype"] = "F32",
                ["shape"] = new JsonArray(shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + 4L * data.Length),
            };
            offset += 4L * data.Length;
        }
        byte[] json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;
        DataFiles.WriteAtomically(path, stream =>
        {
            Span<byte> length = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
            stream.Write(length);
            stream.Write(json);
            for (int i = json.Length; i < padded; i++) stream.WriteByte((byte)' ');
            foreach (var (_, _, data) in list) stream.Write(MemoryMarshal.AsBytes(data.AsSpan()));
        });
    }

    static DataFileException Bad(string path, string problem) => new(path, 0, problem);

    /// <inheritdoc />
    public void Dispose() => _file.Dispose();
}
