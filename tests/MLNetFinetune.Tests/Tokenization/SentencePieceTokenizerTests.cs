using System.Text.Json.Nodes;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

/// <summary>
/// A small SentencePiece BPE model trained by Google's library with Llama 2's settings (byte fallback, split digits, no
/// normalization), a unigram one, and the ids the library gives the test texts; trained when first asked for.
/// </summary>
public sealed class SentencePieceModels : IDisposable
{
    public const int VocabSize = 600;

    readonly TempDirectory _dir = new();
    readonly Lazy<JsonArray> _reference;

    public SentencePieceModels() => _reference = new Lazy<JsonArray>(() =>
    {
        string corpus = _dir.File("corpus.txt", string.Join("\n", File.ReadAllLines(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl"))
            .Concat(TokenizerTexts.Mixed.Where(t => t.Trim().Length > 0).Select(t => t.ReplaceLineEndings(" ")))));
        string bpe = Path.Combine(_dir.Path, "bpe.model"), unigram = Path.Combine(_dir.Path, "unigram.model");
        return TokenizerReference.Run(_dir.Path, new JsonArray(
            new JsonObject { ["sentencepiece_train"] = corpus, ["model"] = bpe, ["vocab_size"] = VocabSize },
            new JsonObject { ["sentencepiece_train"] = corpus, ["model"] = unigram, ["vocab_size"] = VocabSize, ["model_type"] = "unigram" },
            new JsonObject { ["sentencepiece"] = bpe, ["texts"] = new JsonArray(TokenizerTexts.Mixed.Select(t => (JsonNode)t).ToArray()) }));
    });

    /// <summary>What the SentencePiece library gives: ids per text, BOS and EOS.</summary>
    public (int[][] Ids, int Bos, int Eos) Reference
    {
        get
        {
            var result = _reference.Value[2]!;
            return (TokenizerReference.Rows(result["ids"]), result["bos"]!.GetValue<int>(), result["eos"]!.GetValue<int>());
        }
    }

    /// <summary>A new folder holding the BPE model (or the unigram one) as tokenizer.model, and the given files.</summary>
    public string Folder(string name, bool unigram = false, params (string Name, JsonNode Json)[] files)
    {
        _ = _reference.Value;
        string dir = Path.Combine(_dir.Path, name);
        Directory.CreateDirectory(dir);
        File.Copy(Path.Combine(_dir.Path, unigram ? "unigram.model" : "bpe.model"), Path.Combine(dir, "tokenizer.model"));
        foreach (var (file, json) in files) LlamaFamilyFiles.WriteJson(dir, file, json);
        return dir;
    }

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// SentencePiece BPE as Llama 2 and TinyLlama ship it (tokenizer.model, with a tokenizer.json of SentencePiece's BPE
/// beside it): Microsoft.ML.Tokenizers' LlamaTokenizer gives the SentencePiece library's ids, byte fallback included.
/// </summary>
public class SentencePieceTokenizerTests(SentencePieceModels models) : IClassFixture<SentencePieceModels>
{
    // Llama 2's tokenizer_config.json, cut to what matters here.
    static JsonObject Llama2Config(JsonObject? addedTokens = null) => new()
    {
        ["add_bos_token"] = true, ["add_eos_token"] = false, ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["pad_token"] = null, ["unk_token"] = "<unk>",
        ["legacy"] = false, ["tokenizer_class"] = "LlamaTokenizer",
        ["added_tokens_decoder"] = addedTokens ?? new JsonObject
        {
            ["0"] = Added("<unk>"), ["1"] = Added("<s>"), ["2"] = Added("</s>"),
        },
    };

    static JsonObject Added(string content) => new()
    {
        ["content"] = content, ["lstrip"] = false, ["normalized"] = false, ["rstrip"] = false, ["single_word"] = false, ["special"] = true,
    };

    // The tokenizer.json Llama 2 ships beside its model, cut to its settings: SentencePiece's BPE in the tokenizers library.
    static readonly JsonObject Llama2TokenizerJson = new()
    {
        ["normalizer"] = new JsonObject
        {
            ["type"] = "Sequence",
            ["normalizers"] = new JsonArray(new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" }, new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
        },
        ["pre_tokenizer"] = null,
        ["model"] = new JsonObject
        {
            ["type"] = "BPE", ["unk_token"] = "<unk>", ["fuse_unk"] = true, ["byte_fallback"] = true, ["ignore_merges"] = false,
            ["vocab"] = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 }, ["merges"] = new JsonArray(),
        },
    };

    [PythonFact("sentencepiece")]
    public void IdsEqualTheSentencePieceLibrarysOnMixedText()
    {
        var (ids, bos, eos) = models.Reference;
        var tokenizer = TextTokenizer.Load(models.Folder("plain"));
        // Runs of spaces are where LlamaTokenizer's own merge order would part from SentencePiece's (see SentencePieceBpeTokenizer).
        Assert.IsType<SentencePieceBpeTokenizer>(tokenizer.Inner);
        for (int i = 0; i < TokenizerTexts.Mixed.Length; i++)
            TokenizerReference.Same(ids[i], tokenizer.Encode(TokenizerTexts.Mixed[i]), TokenizerTexts.Mixed[i], "SentencePiece");
        Assert.Contains(ids.SelectMany(r => r), id => id is >= 3 and < 3 + 256); // byte fallback tokens (<0x0A> …) were used
        Assert.Equal((bos, eos, true, eos), (tokenizer.BosId, tokenizer.EosId, tokenizer.AddsBos, tokenizer.PadId));
        Assert.Equal("</s>", tokenizer.EosToken);
        Assert.Equal(SentencePieceModels.VocabSize, tokenizer.VocabSize);
    }

    [PythonFact("sentencepiece")]
    public void Llama2sTokenizerJsonDefersToTheModelBesideIt()
    {
        var (ids, _, _) = models.Reference;
        string dir = models.Folder("llama2", files: [("tokenizer.json", Llama2TokenizerJson), ("tokenizer_config.json", Llama2Config())]);
        var tokenizer = TextTokenizer.Load(dir);
        Assert.IsType<SentencePieceBpeTokenizer>(tokenizer.Inner);
        for (int i = 0; i < TokenizerTexts.Mixed.Length; i++) Assert.Equal(ids[i], tokenizer.Encode(TokenizerTexts.Mixed[i]));

        // Without the model, the file names what is missing.
        File.Delete(Path.Combine(dir, "tokenizer.model"));
        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Equal(Path.Combine(dir, "tokenizer.json"), e.FilePath);
        Assert.Contains("model.byte_fallback is true, which is not supported (SentencePiece's BPE, as Llama 2 ships it; it is read from the tokenizer.model", e.Message);
    }

    [PythonFact("sentencepiece")]
    public void DecodeGivesBackTheTextSpecialTokensIncluded()
    {
        var tokenizer = TextTokenizer.Load(models.Folder("decode"));
        foreach (string text in TokenizerTexts.Mixed.Append("<s>Hi</s> and <unk>")) Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
    }

    [PythonFact("sentencepiece")]
    public void SpecialAndAddedTokensAreMatchedWhole()
    {
        var added = new JsonObject { ["0"] = Added("<unk>"), ["1"] = Added("<s>"), ["2"] = Added("</s>"), ["600"] = Added("<pad>") };
        var config = Llama2Config(added);
        config["pad_token"] = "<pad>";
        config["add_bos_token"] = false;
        var tokenizer = TextTokenizer.Load(models.Folder("added", files: [("tokenizer_config.json", config)]));
        Assert.Equal((601, 600, false), (tokenizer.VocabSize, tokenizer.PadId, tokenizer.AddsBos));
        var ids = tokenizer.Encode("Hi</s><pad>");
        Assert.Equal([tokenizer.EosId!.Value, 600], ids.TakeLast(2));
        Assert.Equal(tokenizer.Encode("Hi"), ids.Take(ids.Count - 2));
        Assert.Equal("Hi</s><pad>", tokenizer.Decode(ids));
    }

    [PythonFact("sentencepiece")]
    public void ALoadedModelSavesItsFilesAsTheyWere()
    {
        string dir = models.Folder("save", files: [("tokenizer.json", Llama2TokenizerJson), ("tokenizer_config.json", Llama2Config())]);
        var loaded = TextTokenizer.Load(dir);
        string saved = dir + "-saved";
        loaded.Save(saved);
        foreach (string file in new[] { "tokenizer.model", "tokenizer.json", "tokenizer_config.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(dir, file)), File.ReadAllBytes(Path.Combine(saved, file)));
        var reloaded = TextTokenizer.Load(saved);
        foreach (string text in TokenizerTexts.Mixed) Assert.Equal(loaded.Encode(text), reloaded.Encode(text));
    }

    [PythonFact("sentencepiece")]
    public void AUnigramModelIsNamedAsUnsupported()
    {
        string dir = models.Folder("unigram", unigram: true);
        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Equal(Path.Combine(dir, "tokenizer.model"), e.FilePath);
        Assert.Contains("not a SentencePiece BPE model as Llama 2 ships it", e.Message);
    }
}

public class SentencePieceFileTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void ATokenizerModelThatIsNotSentencePieceNamesTheFile()
    {
        // Llama 3 ships its Tiktoken ranks as original/tokenizer.model; copied up, they are not a SentencePiece model.
        string path = _dir.File("tokenizer.model", "IQ== 0\nIg== 1\n");
        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(_dir.Path));
        Assert.Equal(path, e.FilePath);
        Assert.Contains("not a SentencePiece BPE model as Llama 2 ships it", e.Message);
    }
}
