using System.Buffers.Binary;
using System.Text;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;

namespace MLNetFinetune.Tests.ModelFiles;

/// <summary>Safetensors headers the fuzz benchmark found the reader failing on (or wrongly accepting); each now fails naming the file.</summary>
public class SafeTensorsFuzzRegressionTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    string Write(byte[] header, int dataBytes)
    {
        var bytes = new byte[8 + header.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        return _dir.Bytes($"{Guid.NewGuid():N}.safetensors", bytes);
    }

    string Write(string header, int dataBytes) => Write(Encoding.UTF8.GetBytes(header), dataBytes);

    DataFileException Bad(string path)
    {
        var e = Assert.Throws<DataFileException>(() => SafeTensorsFile.Open(path).Dispose());
        Assert.Equal(path, e.FilePath);
        return e;
    }

    const string A = "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";

    [Fact]
    public void InvalidUtf8InTheHeaderIsNamed()
    {
        // Was an InvalidOperationException ("Cannot transcode invalid UTF-8 JSON text") while the names were read.
        byte[] header = [.. Encoding.UTF8.GetBytes("{\"b"), 0xFF, .. Encoding.UTF8.GetBytes("\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}")];
        Assert.EndsWith("the header holds invalid UTF-8 at byte offset 11", Bad(Write(header, 8)).Message);
    }

    [Fact]
    public void ALoneSurrogateInANameIsNamed()
    {
        Assert.Contains("the header holds unexpected content", Bad(Write("{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8)).Message);
    }

    [Fact]
    public void ARepeatedTensorNameIsMalformed()
    {
        // Was an ArgumentException ("An item with the same key has already been added").
        Assert.Contains("Duplicate property 'a'", Bad(Write($"{{{A},{A}}}", 8)).Message);
    }

    [Fact]
    public void AShapeWhoseSizeOverflowsIsRejected()
    {
        // 2^62 · 4 · 4 bytes wraps around to 0 in 64 bits, which matched the empty range [0, 0]: it was accepted.
        Assert.Contains("overflows 64 bits", Bad(Write("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0)).Message);
    }

    [Fact]
    public void AnEmptyTensorBesideAnotherIsNotAnOverlap()
    {
        string path = Write("{\"m\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]}}", 2);
        using var file = SafeTensorsFile.Open(path);
        Assert.Equal(0, file.Tensors["e"].ElementCount);
        Assert.Equal(2, file.ReadBytes("m").Length);
    }
}
