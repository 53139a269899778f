using System.IO.Compression;
using System.Text;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Data;

/// <summary>Bad files say which file and what is wrong with it; a failed write leaves the old file as it was.</summary>
public class BadInputMessageTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void AMalformedConfigNamesTheFileTheLineAndTheProblem()
    {
        string config = _dir.File("config.json", "{\n  \"model_type\": \"gpt_neox\",\n  \"hidden_size\": 64,,\n}");
        var e = Assert.Throws<DataFileException>(() => ModelConfig.Load(config));
        Assert.Equal(config, e.FilePath);
        Assert.StartsWith($"{config}:3: malformed config (", e.Message);
    }

    [Fact]
    public void AConfigFieldOfTheWrongTypeNamesTheField()
    {
        string config = _dir.File("config.json", "{\"model_type\": \"gpt_neox\", \"hidden_size\": \"wide\"}");
        var e = Assert.Throws<DataFileException>(() => ModelConfig.Load(config));
        Assert.StartsWith($"{config}:1: malformed config (", e.Message);
        Assert.EndsWith("at $.hidden_size)", e.Message);
    }

    [Fact]
    public void AMalformedVocabNamesTheFileAndSaysItIsNotJson()
    {
        string dir = Path.Combine(_dir.Path, "tok");
        Directory.CreateDirectory(dir);
        File.Copy(RepoPaths.Of("models", "facts-base", "merges.txt"), Path.Combine(dir, "merges.txt"));
        string vocab = Path.Combine(dir, "vocab.json");
        File.WriteAllText(vocab, "{\"a\": 0,\n\"b\": 1,\n\"c\" 2}");
        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Equal(vocab, e.FilePath);
        Assert.StartsWith($"{vocab}:3: malformed JSON (", e.Message);
    }

    [Theory]
    [InlineData("corpus.jsonl.gz")]
    [InlineData("corpus.jsonl.zst")]
    public void ATruncatedCompressedCorpusNamesTheFile(string name)
    {
        var text = new StringBuilder();
        var random = new Random(1);
        for (int i = 0; i < 2000; i++) text.Append($"{{\"text\": \"document {i} {random.Next()} {random.Next()} {random.Next()}\"}}\n");
        string path = _dir.Bytes(name, Encoding.UTF8.GetBytes(text.ToString()));
        byte[] whole = File.ReadAllBytes(path);
        File.WriteAllBytes(path, whole[..(whole.Length / 2)]);

        var ml = new MLContext(seed: 0);
        var data = ml.Data.LoadCorpus(new CorpusOptions { Path = path });
        var e = Assert.Throws<DataFileException>(() =>
        {
            using var cursor = data.GetRowCursor(data.Schema);
            while (cursor.MoveNext()) { }
        });
        Assert.Equal(path, e.FilePath);
        Assert.Contains("compressed data ends early or is corrupt (truncated file?)", e.Message);
        Assert.StartsWith(path, e.Message);
    }

    [Fact]
    public void AFailedAtomicWriteKeepsTheOldFileAndLeavesNoTemporaryFile()
    {
        string path = _dir.File("state.json", "old content");
        var e = Assert.Throws<InvalidOperationException>(() => DataFiles.WriteAtomically(path, s =>
        {
            s.Write("new, half written"u8);
            s.Flush();
            throw new InvalidOperationException("disk full");
        }));
        Assert.Equal("disk full", e.Message);
        Assert.Equal("old content", File.ReadAllText(path));
        Assert.Equal([path], Directory.GetFiles(_dir.Path));
    }

    [Fact]
    public void AFailedCompressedAtomicWriteKeepsTheOldFile()
    {
        string path = _dir.Bytes("corpus.jsonl.gz", "{\"text\": \"old\"}\n"u8.ToArray());
        byte[] before = File.ReadAllBytes(path);
        Assert.Equal("killed", Assert.Throws<IOException>(() => DataFiles.WriteAtomically(path, s => { s.Write(new byte[100_000]); throw new IOException("killed"); })).Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.Equal([path], Directory.GetFiles(_dir.Path));
    }
}
