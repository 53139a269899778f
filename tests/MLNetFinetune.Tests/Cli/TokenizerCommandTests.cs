using MLNetFinetune.Cli;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Cli;

public class TokenizerCommandTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void TrainsAndSavesATokenizerThatLoadsBack()
    {
        string outDir = Path.Combine(_dir.Path, "tok");
        var output = new StringWriter();
        var error = new StringWriter();
        int code = CliApp.Run(["tokenizer", "train", "--corpus", RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst"),
            "--vocab-size", "300", "--out", outDir], output, error);

        Assert.Equal("", error.ToString());
        Assert.Equal(0, code);
        Assert.Contains($"300 tokens (42 merges) written to {outDir}", output.ToString());
        Assert.Contains("merging: 42/42", output.ToString());
        var tokenizer = TextTokenizer.Load(outDir);
        Assert.Equal(300, tokenizer.VocabSize);
        Assert.Equal("Tide tables", tokenizer.Decode(tokenizer.Encode("Tide tables")));
    }

    [Fact]
    public void AMissingRequiredOptionIsAnError()
    {
        var error = new StringWriter();
        int code = CliApp.Run(["tokenizer", "train", "--corpus", "x.jsonl"], new StringWriter(), error);
        Assert.NotEqual(0, code);
        Assert.Contains("--out", error.ToString());
    }
}
