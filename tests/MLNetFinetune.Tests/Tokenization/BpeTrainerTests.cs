using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

public class BpeTrainerTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly MLContext _ml = new(seed: 0);

    public void Dispose() => _dir.Dispose();

    static IDataView Texts(params string[] texts) => new DataFrame(new StringDataFrameColumn("Text", texts));

    // The bundled corpus and Q&A pairs: a few KB of varied English, code and punctuation.
    IDataView ExampleText()
    {
        var corpus = _ml.Data.LoadCorpus(RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst"))
            .GetColumn<ReadOnlyMemory<char>>("Text").Select(t => t.ToString());
        var pairs = InstructionData.Load(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl"));
        var qa = pairs["question"].Cast<string>().Zip(pairs["answer"].Cast<string>(), (q, a) => q + "\n" + a);
        return Texts([.. corpus, .. qa]);
    }

    static string Sample => File.ReadAllText(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl"))
        + " Zürich 東京 🚆 <|endoftext|> tab\there";

    [Fact]
    public void LearnsTheMostFrequentPairsInOrder()
    {
        var tokenizer = BpeTrainer.Train(Texts("ab ab ab abc"), new BpeTrainerOptions { VocabSize = 1000, MinPairFrequency = 2 });
        Assert.Equal([("a", "b"), ("Ġ", "ab")], tokenizer.Vocabulary!.Merges);
        Assert.Equal(2 + 256 + 2, tokenizer.VocabSize);
        Assert.Equal(0, tokenizer.EosId);
        Assert.Equal(1, tokenizer.PadId);
    }

    [Fact]
    public void RepeatedPairsInOneWordMergeAndCountCorrectly()
    {
        var tokenizer = BpeTrainer.Train(Texts("abab", "abab"), new BpeTrainerOptions { VocabSize = 1000, MinPairFrequency = 2 });
        Assert.Equal([("a", "b"), ("ab", "ab")], tokenizer.Vocabulary!.Merges);
        Assert.Equal([tokenizer.Vocabulary.Tokens["abab"]], tokenizer.Encode("abab"));
    }

    [Fact]
    public void IsDeterministicAndStopsAtTheVocabularySize()
    {
        var options = new BpeTrainerOptions { VocabSize = 600 };
        var first = BpeTrainer.Train(ExampleText(), options);
        var second = BpeTrainer.Train(ExampleText(), options);
        Assert.Equal(600, first.VocabSize);
        Assert.Equal(600 - 258, first.Vocabulary!.Merges.Count);
        Assert.Equal(first.Vocabulary.Merges, second.Vocabulary!.Merges);
    }

    [Fact]
    public void ReportsProgressForBothPhases()
    {
        var phases = new List<string>();
        BpeTrainer.Train(ExampleText(), new BpeTrainerOptions { VocabSize = 400, Progress = new SynchronousProgress<BpeTrainingProgress>(p => phases.Add(p.Phase)) });
        Assert.Contains("counting", phases);
        Assert.Equal("merging", phases[^1]);
    }

    [Fact]
    public void SavedAndReloadedGivesIdenticalIdsFromEveryFileAndEncoder()
    {
        var trained = BpeTrainer.Train(ExampleText(), new BpeTrainerOptions { VocabSize = 700 });
        string dir = Path.Combine(_dir.Path, "tok");
        trained.Save(dir);
        Assert.True(File.Exists(Path.Combine(dir, "tokenizer.json")));

        var expected = trained.Encode(Sample);
        Assert.Contains(0, expected); // <|endoftext|> in the text is the special token
        Assert.Equal(expected, TextTokenizer.Load(dir).Encode(Sample));                          // tokenizer.json
        Assert.Equal(expected, TextTokenizer.FromVocabulary(trained.Vocabulary!, forceBpe: true).Encode(Sample)); // BPE over merges
        File.Delete(Path.Combine(dir, "tokenizer.json"));
        Assert.Equal(expected, TextTokenizer.Load(dir).Encode(Sample));                          // vocab.json + merges.txt
        Assert.Equal(Sample, trained.Decode(expected));
    }

    [Fact]
    public void APythiaLayoutTokenizerJsonLoadsWithItsAddedTokensAndNfc()
    {
        // GPT-NeoX's tokenizer.json: <|endoftext|> = 0, <|padding|> = 1, NFC normalizer, ByteLevel pre-tokenizer
        // without use_regex, and added tokens outside the special set.
        var trained = BpeTrainer.Train(ExampleText(), new BpeTrainerOptions { VocabSize = 500 });
        string dir = Path.Combine(_dir.Path, "pythia");
        trained.Save(dir);
        string path = Path.Combine(dir, "tokenizer.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(path))!;
        json["normalizer"] = new System.Text.Json.Nodes.JsonObject { ["type"] = "NFC" };
        json["pre_tokenizer"] = System.Text.Json.Nodes.JsonNode.Parse("{\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true}");
        var merges = json["model"]!["merges"]!.AsArray(); // written as "a b"; newer tokenizers write ["a", "b"]
        var asArrays = merges.Select(m => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonArray(m!.GetValue<string>().Split(' ').Select(t => (System.Text.Json.Nodes.JsonNode)t).ToArray())).ToArray();
        json["model"]!["merges"] = new System.Text.Json.Nodes.JsonArray(asArrays);
        json["added_tokens"]!.AsArray().Add(System.Text.Json.Nodes.JsonNode.Parse("{\"id\": 500, \"content\": \"    \", \"special\": false}"));
        File.WriteAllText(path, json.ToJsonString());

        var pythia = TextTokenizer.Load(dir);
        Assert.Equal(0, pythia.EosId);
        Assert.Equal(1, pythia.PadId);
        Assert.Equal(501, pythia.VocabSize);
        Assert.Equal(pythia.Encode("caf\u00e9"), pythia.Encode("cafe\u0301")); // NFC before BPE
        Assert.Contains(500, pythia.Encode("a    b"));
        Assert.Contains(pythia.Vocabulary!.AddedTokens, t => t is { Content: "    ", Special: false });

        // Saved again, the added token keeps its flags and stays out of the model's vocabulary.
        string again = Path.Combine(_dir.Path, "again");
        pythia.Save(again);
        var saved = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(again, "tokenizer.json")))!;
        Assert.Contains(saved["added_tokens"]!.AsArray(), t => t!["content"]!.GetValue<string>() == "    " && !t["special"]!.GetValue<bool>());
        Assert.Null(saved["model"]!["vocab"]!["    "]);
        Assert.Equal(pythia.Encode("a    b"), TextTokenizer.Load(again).Encode("a    b"));
        Assert.Equal(trained.Encode("Where are the examples?"), pythia.Encode("Where are the examples?"));
    }

    [Fact]
    public void TrainedTokenizerRoundTripsAnyText()
    {
        var trained = BpeTrainer.Train(ExampleText(), new BpeTrainerOptions { VocabSize = 500 });
        foreach (var text in new[] { "Zürich naïve", "東京 서울", "🚆🇨🇭", "ctl\u0000\u0001\u001b\u007f", "  spaces  \n" })
            Assert.Equal(text, trained.Decode(trained.Encode(text)));
    }

    [Fact]
    public void BadOptionsAreNamed()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => BpeTrainer.Train(Texts("x"), new BpeTrainerOptions { VocabSize = 100 }));
        Assert.Contains("VocabSize 100 is below the 258 ids", e.Message);
        var column = Assert.Throws<ArgumentOutOfRangeException>(() => BpeTrainer.Train(Texts("x"), new BpeTrainerOptions { TextColumn = "body" }));
        Assert.Contains("no column 'body'. Columns: 'Text'", column.Message);
        Assert.Contains("Column 'Text' holds no text to train on", Assert.Throws<InvalidDataException>(() => BpeTrainer.Train(Texts(""), new BpeTrainerOptions())).Message);
    }
}
