using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

public class TextTokenizerTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static readonly string[] Texts =
    [
        "Hello world",
        "The quick brown fox jumps over the lazy dog. 1234567890 !@#$%^&*()",
        "Zürich, São Paulo, Kraków, naïve café, Ærøskøbing",
        "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
        "Emoji 🚆🇨🇭👩‍👩‍👧 and symbols ∑∫√",
        "control\tchars\r\n\u0000\u0001\u001b[0m\u007f end",
        "   leading and trailing spaces   \n\n\n",
        "<|endoftext|>special in text<|endoftext|>",
    ];

    public static TheoryData<string> RoundTripTexts => new(Texts);

    [Fact]
    public void Gpt2GivesThePublishedIds()
    {
        var gpt2 = TextTokenizer.Gpt2();
        Assert.Equal([15496, 995], gpt2.Encode("Hello world"));
        Assert.Equal(50256, gpt2.EosId);
        Assert.Equal(50257, gpt2.VocabSize);
    }

    [Theory]
    [MemberData(nameof(RoundTripTexts))]
    public void Gpt2DecodesWhatItEncodes(string text)
    {
        var gpt2 = TextTokenizer.Gpt2();
        Assert.Equal(text, gpt2.Decode(gpt2.Encode(text)));
    }

    [Fact]
    public void Gpt2VocabAndMergesFilesGiveTheSameIdsOnBothEncoders()
    {
        string dir = Gpt2Files.WriteTo(Path.Combine(_dir.Path, "gpt2"));
        var packaged = TextTokenizer.Gpt2();
        var fromFiles = TextTokenizer.Load(dir);
        var bpe = TextTokenizer.FromVocabulary(fromFiles.Vocabulary!, forceBpe: true);
        Assert.True(fromFiles.Vocabulary!.MergesFollowIdOrder());
        Assert.Equal(50000, fromFiles.Vocabulary.Merges.Count);
        string sample = string.Join(" ", Texts) + " " + File.ReadAllText(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl"));
        var expected = packaged.Encode(sample);
        Assert.Equal(expected, fromFiles.Encode(sample));
        Assert.Equal(expected, bpe.Encode(sample));
        Assert.Equal([15496, 995], bpe.Encode("Hello world"));
    }

    [Fact]
    public void MissingAndCorruptFilesNameTheFileAndTheProblem()
    {
        Assert.Contains("has no tokenizer", Assert.Throws<FileNotFoundException>(() => TextTokenizer.Load(_dir.Path)).Message);
        var missingDir = Assert.Throws<DirectoryNotFoundException>(() => TextTokenizer.Load(Path.Combine(_dir.Path, "nope")));
        Assert.Contains("nope", missingDir.Message);

        string onlyVocab = Path.Combine(_dir.Path, "only-vocab");
        Directory.CreateDirectory(onlyVocab);
        File.WriteAllText(Path.Combine(onlyVocab, "vocab.json"), "{\"a\": 0}");
        var noMerges = Assert.Throws<FileNotFoundException>(() => TextTokenizer.Load(onlyVocab));
        Assert.Contains("merges.txt", noMerges.Message);

        string corrupt = Path.Combine(_dir.Path, "corrupt");
        Directory.CreateDirectory(corrupt);
        File.WriteAllText(Path.Combine(corrupt, "tokenizer.json"), "{\"model\": {\"vocab\": {\"a\": 0,,}}}");
        var bad = Assert.Throws<DataFileException>(() => TextTokenizer.Load(corrupt));
        Assert.StartsWith(Path.Combine(corrupt, "tokenizer.json") + ":1: malformed JSON", bad.Message);

        File.WriteAllText(Path.Combine(corrupt, "tokenizer.json"), "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
        Assert.Contains("model type is \"Unigram\"; only byte-level \"BPE\" is supported", Assert.Throws<DataFileException>(() => TextTokenizer.Load(corrupt)).Message);
    }

    [Fact]
    public void BadMergesNameTheLineOrTheMissingToken()
    {
        string dir = Gpt2Files.WriteTo(Path.Combine(_dir.Path, "gpt2"));
        string merges = Path.Combine(dir, "merges.txt");
        var lines = File.ReadAllLines(merges).ToList();
        lines[3] = "Ġthreeparts here x";
        File.WriteAllLines(merges, lines);
        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Equal($"{merges}:4: expected two tokens separated by one space, found \"Ġthreeparts here x\"", e.Message);

        lines[3] = "Ġzzzq Ġzzzr";
        File.WriteAllLines(merges, lines);
        var missing = Assert.Throws<InvalidDataException>(() => TextTokenizer.Load(dir));
        Assert.Contains("merge 3 ('Ġzzzq Ġzzzr') uses 'Ġzzzq', which is not in the vocabulary", missing.Message);
    }

    [Fact]
    public void AVocabularyLargerThanTheModelIsReportedWhenTheyMeet()
    {
        var gpt2 = TextTokenizer.Gpt2();
        gpt2.CheckFits(50304, "config.json"); // padded embedding table: fine
        var e = Assert.Throws<InvalidDataException>(() => gpt2.CheckFits(32000, "models/x/config.json"));
        Assert.Contains("has ids up to 50256, but models/x/config.json gives vocab_size 32000", e.Message);
    }
}

public class TokenizerJsonValidationTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    string Write(string json)
    {
        string dir = Path.Combine(_dir.Path, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json);
        return dir;
    }

    const string Bytes = "\"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": false}";

    [Theory]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {}, \"merges\": []}, " + Bytes + "}", "model.byte_fallback is true, which is not supported")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {}, \"merges\": []}, " + Bytes + "}", "model.dropout is 0.1")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}}", "no pre_tokenizer")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, " + Bytes + ", \"post_processor\": {\"type\": \"TemplateProcessing\"}}", "post_processor \"TemplateProcessing\"")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": [[1, 2]]}, " + Bytes + "}", "model.merges[0] is neither")]
    [InlineData("{\"model\": {\"type\": \"BPE\", \"vocab\": {}, \"merges\": []}, " + Bytes + ", \"added_tokens\": {}}", "added_tokens is not an array")]
    public void SettingsThatWouldChangeTheIdsAreRejected(string json, string expected)
    {
        var e = Assert.Throws<MLNetFinetune.Data.DataFileException>(() => TextTokenizer.Load(Write(json)));
        Assert.Contains(expected, e.Message);
        Assert.EndsWith("tokenizer.json", e.FilePath);
    }

    [Fact]
    public void SpecialTokensMatchLongestFirstWhateverTheirOrderInTheFile()
    {
        var tokens = Enumerable.Range(0, 256).ToDictionary(b => ByteLevel.ByteToChar[b].ToString(), b => b + 2);
        var vocabulary = new BpeVocabulary(tokens, [], [new AddedToken("  ", 0, Special: false), new AddedToken("    ", 1, Special: false)], "test");
        var tokenizer = TextTokenizer.FromVocabulary(vocabulary);
        Assert.Equal([2 + 'a', 1, 2 + 'b'], tokenizer.Encode("a    b"));
    }
}
