using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.Data;

namespace MLNetFinetune.ModelFiles;

/// <summary>
/// The weights of a model directory as Hugging Face publishes them: one <c>model.safetensors</c>, or shards
/// (<c>model-00001-of-00003.safetensors</c>, …) listed by <c>model.safetensors.index.json</c>. Tensors are read one at a
/// time, so loading never holds more than one tensor beside the model.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    /// <summary>The shard index's file name.</summary>
    public const string IndexFile = "model.safetensors.index.json";

    /// <summary>transformers' default <c>max_shard_size</c> ("5GB", decimal).</summary>
    public const long DefaultMaxShardBytes = 5_000_000_000;

    readonly List<SafeTensorsFile> _files;
    readonly Dictionary<string, SafeTensorsFile> _fileOf;

    SafeTensorsCheckpoint(string source, List<SafeTensorsFile> files, Dictionary<string, SafeTensorsFile> fileOf)
    {
        Source = source;
        _files = files;
        _fileOf = fileOf;
        Tensors = fileOf.ToDictionary(p => p.Key, p => p.Value.Tensors[p.Key]);
    }

    /// <summary>The file read (the single weights file or the index), for messages.</summary>
    public string Source { get; }

    /// <summary>Every tensor, by name, across the shards.</summary>
    public IReadOnlyDictionary<string, SafeTensorInfo> Tensors { get; }

    /// <summary>Whether <paramref name="directory"/> has weights in either layout.</summary>
    public static bool Exists(string directory) =>
        File.Exists(Path.Combine(directory, ModelDirectory.WeightsFile)) || File.Exists(Path.Combine(directory, IndexFile));

    /// <summary>Opens the weights of a model directory: the index when there is one (as transformers prefers), else model.safetensors.</summary>
    public static SafeTensorsCheckpoint Open(string directory)
    {
        string index = Path.Combine(directory, IndexFile);
        if (!File.Exists(index))
        {
            var single = SafeTensorsFile.Open(Path.Combine(directory, ModelDirectory.WeightsFile));
            return new SafeTensorsCheckpoint(single.Path, [single], single.Tensors.Keys.ToDictionary(k => k, _ => single));
        }

        var weightMap = ReadWeightMap(index);
        var files = new Dictionary<string, SafeTensorsFile>();
        try
        {
            var fileOf = new Dictionary<string, SafeTensorsFile>();
            foreach (var (name, shard) in weightMap)
            {
                if (shard.Contains('/') || shard.Contains('\\') || shard == "..")
                    throw new DataFileException(index, 0, $"weight_map sends '{name}' to '{shard}', which is not a file beside the index", field: "weight_map");
                if (!files.TryGetValue(shard, out var file))
                {
                    string path = Path.Combine(directory, shard);
                    if (!File.Exists(path)) throw new DataFileException(index, 0, $"weight_map lists shard '{shard}', which does not exist", field: "weight_map");
                    files[shard] = file = SafeTensorsFile.Open(path);
                }
                if (!file.Tensors.ContainsKey(name))
                    throw new DataFileException(index, 0, $"weight_map puts '{name}' in '{shard}', which has no such tensor", field: "weight_map");
                fileOf[name] = file;
            }
            return new SafeTensorsCheckpoint(index, [.. files.Values], fileOf);
        }
        catch
        {
            foreach (var file in files.Values) file.Dispose();
            throw;
        }
    }

    static Dictionary<string, string> ReadWeightMap(string index)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllBytes(index));
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(index, "shard index", e);
        }
        if (root?["weight_map"] is not JsonObject map || map.Count == 0)
            throw new DataFileException(index, 0, "no \"weight_map\" object naming each tensor's shard", field: "weight_map");
        return map.ToDictionary(p => p.Key, p => p.Value is JsonValue v && v.TryGetValue(out string? file) ? file
            : throw new DataFileException(index, 0, $"weight_map entry '{p.Key}' is not a file name", field: "weight_map"));
    }

    /// <summary>A floating-point tensor as float32 into <paramref name="destination"/> (exactly its size), from whichever shard holds it.</summary>
    public void ReadFloat32(string name, Span<float> destination) => FileOf(name).ReadFloat32(name, destination);

    SafeTensorsFile FileOf(string name) => _fileOf.TryGetValue(name, out var file) ? file
        : throw new KeyNotFoundException($"{Source}: no tensor '{name}' (the checkpoint has {Tensors.Count} tensors, e.g. {string.Join(", ", Tensors.Keys.Order().Take(3))}).");

    /// <summary>A floating-point tensor as float32, from whichever shard holds it.</summary>
    public float[] ReadFloat32(string name) => FileOf(name).ReadFloat32(name);

    /// <summary>
    /// Writes float32 weights into <paramref name="directory"/> as transformers' <c>save_pretrained</c> does: one
    /// model.safetensors when they fit in <paramref name="maxShardBytes"/>, else shards filled in the given order (a new
    /// shard when the next tensor would overflow this one) plus the index. <paramref name="read"/> is called once per
    /// tensor while its shard is written, so only one shard is held in memory. Weight files of an earlier save that
    /// this one does not write are removed.
    /// </summary>
    public static void Save(string directory, IReadOnlyList<(string Name, long[] Shape)> layout, Func<string, float[]> read, long maxShardBytes = DefaultMaxShardBytes)
    {
        static long Bytes(long[] shape) => 4 * shape.Aggregate(1L, (a, b) => a * b);
        var shards = new List<List<(string Name, long[] Shape)>> { new() };
        long current = 0;
        foreach (var tensor in layout)
        {
            long size = Bytes(tensor.Shape);
            if (current > 0 && current + size > maxShardBytes)
            {
                shards.Add([]);
                current = 0;
            }
            shards[^1].Add(tensor);
            current += size;
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt" };
        var written = new HashSet<string>();
        if (shards.Count == 1)
        {
            SafeTensorsFile.WriteFloat32(Path.Combine(directory, ModelDirectory.WeightsFile), layout.Select(t => (t.Name, t.Shape, read(t.Name))), metadata);
            written.Add(ModelDirectory.WeightsFile);
        }
        else
        {
            var weightMap = new SortedDictionary<string, string>(StringComparer.Ordinal);
            for (int i = 0; i < shards.Count; i++)
            {
                string file = $"model-{i + 1:D5}-of-{shards.Count:D5}.safetensors";
                SafeTensorsFile.WriteFloat32(Path.Combine(directory, file), shards[i].Select(t => (t.Name, t.Shape, read(t.Name))), metadata);
                foreach (var (name, _) in shards[i]) weightMap[name] = file;
                written.Add(file);
            }
            var index = new JsonObject
            {
                ["metadata"] = new JsonObject { ["total_size"] = layout.Sum(t => Bytes(t.Shape)) },
                ["weight_map"] = new JsonObject(weightMap.Select(p => KeyValuePair.Create(p.Key, (JsonNode?)p.Value))),
            };
            DataFiles.WriteJson(Path.Combine(directory, IndexFile), index);
            written.Add(IndexFile);
        }
        foreach (string stale in Directory.GetFiles(directory, "model*.safetensors*").Select(Path.GetFileName).OfType<string>())
            if (!written.Contains(stale) && (stale == ModelDirectory.WeightsFile || stale == IndexFile || stale.StartsWith("model-", StringComparison.Ordinal)))
                File.Delete(Path.Combine(directory, stale));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
    }
}
