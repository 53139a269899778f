using System.IO.Compression;
using System.Text;

namespace MLNetFinetune.Tests;

/// <summary>A temporary folder for a test's files, deleted afterwards.</summary>
public sealed class TempDirectory : IDisposable
{
    public string Path { get; } = Directory.CreateTempSubdirectory("mlnetft").FullName;

    public string File(string name, string content) => Bytes(name, Encoding.UTF8.GetBytes(content));

    /// <summary>Writes bytes, compressing by extension (.gz, .zst) as the corpora ship.</summary>
    public string Bytes(string name, byte[] content)
    {
        string full = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(full)!);
        using var file = System.IO.File.Create(full);
        if (name.EndsWith(".gz")) { using var gz = new GZipStream(file, CompressionLevel.Fastest); gz.Write(content); }
        else if (name.EndsWith(".zst")) { using var z = new ZstdSharp.CompressionStream(file); z.Write(content); }
        else file.Write(content);
        return full;
    }

    public void Dispose() => Directory.Delete(Path, recursive: true);
}
