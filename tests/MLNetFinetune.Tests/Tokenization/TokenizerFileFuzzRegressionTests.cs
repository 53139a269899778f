using System.Text;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

/// <summary>
/// Files the fuzz benchmark (<c>MLNetFinetune.Benchmarks fuzz</c>) found the tokenizer readers failing on with an
/// undocumented exception or a wrong result; each must now be a <see cref="DataFileException"/> or an
/// <see cref="InvalidDataException"/> naming the file.
/// </summary>
public class TokenizerFileFuzzRegressionTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    // A copy of the bundled base model's tokenizer files (tokenizer.json, or vocab.json + merges.txt) with one changed.
    string Copy(string file, Func<byte[], byte[]> change)
    {
        string dir = Path.Combine(_dir.Path, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        foreach (string name in file == "tokenizer.json" ? new[] { "tokenizer.json" } : ["vocab.json", "merges.txt"])
        {
            byte[] bytes = File.ReadAllBytes(RepoPaths.Of("models", "facts-base", name));
            File.WriteAllBytes(Path.Combine(dir, name), name == file ? change(bytes) : bytes);
        }
        return dir;
    }

    static Func<byte[], byte[]> Replace(string from, string to) => b => Replace(b, Encoding.UTF8.GetBytes(from), Encoding.UTF8.GetBytes(to));

    static byte[] Replace(byte[] bytes, byte[] from, byte[] to)
    {
        int at = bytes.AsSpan().IndexOf(from);
        Assert.True(at >= 0, $"'{Encoding.UTF8.GetString(from)}' not found");
        return [.. bytes.AsSpan(0, at), .. to, .. bytes.AsSpan(at + from.Length)];
    }

    static DataFileException BadFile(string dir, string file)
    {
        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Equal(Path.Combine(dir, file), e.FilePath);
        return e;
    }

    [Theory]
    [InlineData("tokenizer.json")]
    [InlineData("vocab.json")]
    public void TheBundledFilesLoad(string file) => Assert.Equal(2048, TextTokenizer.Load(Copy(file, b => b)).VocabSize);

    [Fact]
    public void InvalidUtf8InMergesTxtNamesTheLineAndOffset()
    {
        // Was a DecoderFallbackException from the decoding StreamReader.
        string dir = Copy("merges.txt", b => Replace(b, "h e\n"u8.ToArray(), [(byte)'h', (byte)' ', 0xE2, 0x82, (byte)'\n']));
        var e = BadFile(dir, "merges.txt");
        Assert.Equal(3, e.Line);
        Assert.EndsWith(":3: invalid UTF-8 at byte offset 21", e.Message);
    }

    [Theory]
    [InlineData("tokenizer.json")]
    [InlineData("vocab.json")]
    public void InvalidUtf8InAJsonFileNamesTheLineAndOffset(string file)
    {
        // Was an InvalidOperationException ("Cannot transcode invalid UTF-8 JSON text") when the object was first read.
        string dir = Copy(file, b => Replace(b, "\"Ġi\":"u8.ToArray(), [(byte)'"', 0xC4, 0xA0, (byte)'i', 0xFF, (byte)'"', (byte)':']));
        var e = BadFile(dir, file);
        Assert.True(e.Line >= 1 && e.ByteOffset > 0);
        Assert.Contains($"invalid UTF-8 at byte offset {e.ByteOffset}", e.Message);
    }

    [Theory]
    [InlineData("tokenizer.json", "\"Ġi\": 258,", "\"Ġi\": 258, \"Ġi\": 259,")]
    [InlineData("vocab.json", "\"Ġi\":258,", "\"Ġi\":258,\"Ġi\":258,")]
    public void ARepeatedKeyIsMalformedJson(string file, string from, string to)
    {
        // Was an ArgumentException ("An item with the same key has already been added") from JsonObject.
        Assert.Contains("Duplicate property 'Ġi'", BadFile(Copy(file, Replace(from, to)), file).Message);
    }

    [Theory]
    [InlineData("\"type\": \"ByteLevel\",", "\"type\": {\"nested\": 1},")]     // pre_tokenizer.type an object
    [InlineData("\"add_prefix_space\": false,", "\"add_prefix_space\": \"no\",")] // a string where a bool belongs
    [InlineData("\"Ġ i\"", "\"\\ud800 i\"")]                                       // a lone surrogate escape in a merge
    public void AValueOfTheWrongKindNamesTheFile(string from, string to)
    {
        // Were InvalidOperationException / FormatException from JsonNode.GetValue.
        Assert.Contains("unexpected content", BadFile(Copy("tokenizer.json", Replace(from, to)), "tokenizer.json").Message);
    }

    [Fact]
    public void ARepeatedMergeIsRejected()
    {
        // Was an ArgumentException from Microsoft.ML.Tokenizers' BPE model ("same key … Pair`1").
        string dir = Copy("merges.txt", Replace("h e\n", "h e\nh e\n"));
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(dir));
        Assert.Contains("merge 3 ('h e') repeats merge 2", e.Message);
        Assert.Contains(Path.Combine(dir, "merges.txt"), e.Message);
    }

    [Theory]
    [InlineData("tokenizer.json", "\"Ġi\": 258", "\"Ġi\": 2147483647")]
    [InlineData("vocab.json", "\"Ġi\":258", "\"Ġi\":2147483647")]
    public void AnIdTooLargeForAVocabularyIsRejected(string file, string from, string to)
    {
        // Was accepted with VocabSize overflowing to a negative or tiny number, so CheckFits passed and ids escaped the table.
        string dir = Copy(file, Replace(from, to));
        var e = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(dir));
        Assert.Contains("has id 2147483647, above the largest id supported", e.Message);
        Assert.Contains(Path.Combine(dir, file), e.Message);
    }
}
