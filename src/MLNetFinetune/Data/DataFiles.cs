using System.IO.Compression;
using Microsoft.Extensions.FileSystemGlobbing;
using ZstdSharp;

namespace MLNetFinetune.Data;

/// <summary>Finding data files (file, folder or glob) and opening them with the decompression their name asks for.</summary>
public static class DataFiles
{
    // Without this switch a .gz cut short (an interrupted download) reads as a shorter file without any error; with it,
    // GZipStream throws InvalidDataException at the cut. An application that set the switch itself keeps its choice.
    const string StrictDecompression = "System.IO.Compression.UseStrictValidation";

    static DataFiles()
    {
        if (!AppContext.TryGetSwitch(StrictDecompression, out _)) AppContext.SetSwitch(StrictDecompression, true);
    }

    /// <summary>
    /// The files a path names, in ordinal order so every pass and every machine sees the same sequence:
    /// a file; a folder (searched recursively for names ending in one of <paramref name="extensions"/>);
    /// or a glob such as <c>data/*.jsonl.zst</c> or <c>corpus/**/*.txt</c>.
    /// </summary>
    public static IReadOnlyList<string> Resolve(string path, IReadOnlyCollection<string> extensions)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(path);
        if (File.Exists(path)) return new[] { path };
        if (Directory.Exists(path))
        {
            var found = Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
                .Where(f => extensions.Any(e => f.EndsWith(e, StringComparison.OrdinalIgnoreCase)))
                .Order(StringComparer.Ordinal).ToList();
            if (found.Count == 0)
                throw new FileNotFoundException($"Folder '{path}' holds no data files (looked for {string.Join(", ", extensions)}).", path);
            return found;
        }
        if (path.IndexOfAny(['*', '?', '[']) >= 0)
        {
            string full = Path.GetFullPath(path);
            int firstWildcard = full.IndexOfAny(['*', '?', '[']);
            string root = Path.GetDirectoryName(full[..firstWildcard]) ?? "/";
            string pattern = Path.GetRelativePath(root, full);
            var matcher = new Matcher(StringComparison.Ordinal);
            matcher.AddInclude(pattern);
            var found = matcher.GetResultsInFullPath(root).Order(StringComparer.Ordinal).ToList();
            if (found.Count == 0)
                throw new FileNotFoundException($"No files match '{path}'.", path);
            return found;
        }
        throw new FileNotFoundException($"Data path '{path}' does not exist (give a file, a folder or a glob).", path);
    }

    /// <summary>Opens a file for reading, decompressing <c>.gz</c> and <c>.zst</c> transparently.</summary>
    public static Stream OpenRead(string path)
    {
        var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        try
        {
            if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) return new GZipStream(file, CompressionMode.Decompress);
            if (path.EndsWith(".zst", StringComparison.OrdinalIgnoreCase)) return new DecompressionStream(file);
            return file;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Writes a JSON document atomically, indented, with non-ASCII text as itself (config, tokenizer and index files
    /// people read, as Hugging Face's tools write them readable).
    /// </summary>
    public static void WriteJson(string path, System.Text.Json.Nodes.JsonNode node) => WriteAtomically(path, s =>
    {
        using var writer = new System.Text.Json.Utf8JsonWriter(s, new System.Text.Json.JsonWriterOptions
        {
            Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        });
        node.WriteTo(writer);
    });

    /// <summary>
    /// Creates a file atomically: the content goes to a temporary file beside it, which replaces
    /// <paramref name="path"/> only when <paramref name="write"/> returns, so a killed run leaves no half file.
    /// <c>.gz</c> and <c>.zst</c> names are compressed.
    /// </summary>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string temp = $"{full}.tmp-{Path.GetRandomFileName()}";
        try
        {
            using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, bufferSize: 1 << 16))
            {
                if (path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase))
                {
                    using var gz = new GZipStream(file, CompressionLevel.Optimal, leaveOpen: true);
                    write(gz);
                }
                else if (path.EndsWith(".zst", StringComparison.OrdinalIgnoreCase))
                {
                    using var zst = new CompressionStream(file, level: 3, leaveOpen: true);
                    write(zst);
                }
                else write(file);
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } // keep the original error
            throw;
        }
    }

    /// <summary>The name without compression suffix, lower-cased: <c>a.jsonl.zst</c> → <c>a.jsonl</c>.</summary>
    internal static string UncompressedName(string path)
    {
        string name = Path.GetFileName(path).ToLowerInvariant();
        foreach (string suffix in new[] { ".gz", ".zst" })
            if (name.EndsWith(suffix, StringComparison.Ordinal)) return name[..^suffix.Length];
        return name;
    }
}
