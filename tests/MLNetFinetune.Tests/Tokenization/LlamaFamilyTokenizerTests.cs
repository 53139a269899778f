using System.Text.Json.Nodes;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

/// <summary>The layouts, each written when first asked for, and what the Python reference encodes with each.</summary>
public sealed class LlamaFamilyFolders : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly Lazy<JsonArray> _reference;
    readonly Dictionary<string, string> _written = [];

    public LlamaFamilyFolders() => _reference = new Lazy<JsonArray>(() => TokenizerReference.Run(_dir.Path, new JsonArray(
    [
        .. LlamaFamilyFiles.ReferenceLayouts.Select(layout => Job(layout)),
        Job(LlamaFamilyFiles.Llama3, ignoreMerges: false),
    ])));

    JsonNode Job(string layout, bool? ignoreMerges = null)
    {
        var job = new JsonObject
        {
            ["bpe"] = Path.Combine(Folder(layout), "tokenizer.json"),
            ["texts"] = new JsonArray(TokenizerTexts.Mixed.Select(t => (JsonNode)t).ToArray()),
        };
        if (ignoreMerges is { } ignore) job["ignore_merges"] = ignore;
        return job;
    }

    public string Folder(string layout)
    {
        lock (_written)
        {
            if (!_written.TryGetValue(layout, out string? folder))
                _written[layout] = folder = LlamaFamilyFiles.Write(layout, Path.Combine(_dir.Path, layout));
            return folder;
        }
    }

    /// <summary>A copy of a layout's folder to change, under <paramref name="name"/>.</summary>
    public string Copy(string layout, string name)
    {
        string copy = Path.Combine(_dir.Path, name);
        Directory.CreateDirectory(copy);
        foreach (string file in Directory.GetFiles(Folder(layout))) File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        return copy;
    }

    /// <summary>The reference's ids per text: as encoded (no special tokens added), and with the post-processor's.</summary>
    public (int[][] Ids, int[][] WithSpecial) Reference(string layout)
    {
        var result = _reference.Value[Array.IndexOf(LlamaFamilyFiles.ReferenceLayouts, layout)]!;
        return (TokenizerReference.Rows(result["ids"]), TokenizerReference.Rows(result["ids_with_special"]));
    }

    /// <summary>The reference's ids for Llama 3's file with ignore_merges off.</summary>
    public int[][] Llama3WithoutIgnoreMerges => TokenizerReference.Rows(_reference.Value[LlamaFamilyFiles.ReferenceLayouts.Length]!["ids"]);

    public void Dispose() => _dir.Dispose();
}

/// <summary>
/// Byte-level BPE as Llama 3, Qwen2 and SmolLM2 ship it: the ids equal those of an independent implementation of
/// Hugging Face's algorithm (tests/reference/tokenizer_reference.py) on text that tests every step; BOS, EOS and padding
/// come from the files; loaded tokenizers save back to the same files; unsupported settings are named.
/// </summary>
public class LlamaFamilyTokenizerTests(LlamaFamilyFolders folders) : IClassFixture<LlamaFamilyFolders>
{
    public static TheoryData<string> Layouts => new(LlamaFamilyFiles.Layouts);

    public static TheoryData<string> ReferenceLayouts => new(LlamaFamilyFiles.ReferenceLayouts);

    [PythonTheory("regex")]
    [MemberData(nameof(ReferenceLayouts))]
    public void IdsEqualTheHuggingFaceAlgorithmsOnMixedText(string layout)
    {
        var (ids, withSpecial) = folders.Reference(layout);
        var loaded = TextTokenizer.Load(folders.Folder(layout));
        // Both encoders: Tiktoken where merges follow ids (Qwen2, SmolLM2, GPT-2 here), BPE over the merges always.
        foreach (var tokenizer in new[] { loaded, TextTokenizer.FromVocabulary(loaded.Vocabulary!, forceBpe: true) })
        {
            for (int i = 0; i < TokenizerTexts.Mixed.Length; i++)
            {
                string text = TokenizerTexts.Mixed[i];
                var encoded = tokenizer.Encode(text);
                TokenizerReference.Same(ids[i], encoded, text, $"{layout} ({tokenizer.Inner.GetType().Name})");
                if (tokenizer == loaded)
                    TokenizerReference.Same(withSpecial[i], [.. loaded.AddsBos ? [loaded.BosId!.Value] : Array.Empty<int>(), .. encoded], text, $"{layout} with special tokens");
            }
        }
    }

    [PythonFact("regex")]
    public void IgnoreMergesKeepsAWordOfTheVocabularyWhole()
    {
        var (ids, _) = folders.Reference(LlamaFamilyFiles.Llama3);
        var without = folders.Llama3WithoutIgnoreMerges;
        var llama3 = TextTokenizer.Load(folders.Folder(LlamaFamilyFiles.Llama3));
        Assert.True(llama3.Vocabulary!.IgnoreMerges);
        // The setting matters for these texts (the file holds words no merge makes), and ours follows it.
        var changed = Enumerable.Range(0, ids.Length).Where(i => !ids[i].SequenceEqual(without[i])).ToList();
        Assert.NotEmpty(changed);
        foreach (int i in changed) Assert.Equal(ids[i], llama3.Encode(TokenizerTexts.Mixed[i]));
        Assert.Equal([llama3.Vocabulary.Tokens[LlamaFamilyFiles.Spell("日本語")]], llama3.Encode("日本語"));
    }

    [Fact]
    public void AddedTokensAreMatchedWholeWhetherSpecialOrNot()
    {
        var llama3 = TextTokenizer.Load(folders.Folder(LlamaFamilyFiles.Llama3));
        var ids = llama3.Encode("<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
        Assert.Equal(llama3.SpecialTokens["<|start_header_id|>"], ids[0]);
        Assert.Equal(llama3.SpecialTokens["<|eot_id|>"], ids[^1]);
        Assert.True(llama3.SpecialTokens["<|eot_id|>"] >= llama3.Vocabulary!.Tokens.Count); // beyond the BPE vocabulary
        Assert.Equal(llama3.SpecialTokens["<|eot_id|>"] + 1, llama3.VocabSize);

        var qwen2 = TextTokenizer.Load(folders.Folder(LlamaFamilyFiles.Qwen2));
        var think = qwen2.Encode("a<think>b");
        Assert.Equal([qwen2.Encode("a")[0], qwen2.SpecialTokens["<think>"], qwen2.Encode("b")[0]], think);
        Assert.False(qwen2.Vocabulary!.AddedTokens.Single(t => t.Content == "<think>").Special);
    }

    [Fact]
    public void BosEosAndPaddingComeFromTheFiles()
    {
        // Llama 3: BOS from the TemplateProcessing post-processor, EOS from tokenizer_config.json, padding falls back to EOS.
        var llama3 = TextTokenizer.Load(folders.Folder(LlamaFamilyFiles.Llama3));
        Assert.True(llama3.AddsBos);
        Assert.Equal(llama3.SpecialTokens["<|begin_of_text|>"], llama3.BosId);
        Assert.Equal(llama3.SpecialTokens["<|end_of_text|>"], llama3.EosId);
        Assert.Equal("<|end_of_text|>", llama3.EosToken);
        Assert.Equal(llama3.EosId, llama3.PadId);
        // A sequence starts with BOS, once: not again when a chat template already wrote it.
        int bos = llama3.BosId!.Value;
        Assert.Equal([bos, .. llama3.Encode("Hello")], llama3.EncodeSequence("Hello"));
        Assert.Equal(llama3.Encode("<|begin_of_text|>Hello"), llama3.EncodeSequence("<|begin_of_text|>Hello"));
        Assert.Equal(1, llama3.EncodeSequence("<|begin_of_text|>Hello").Count(id => id == bos));

        // Qwen2: bos_token null (none), EOS <|im_end|>, pad <|endoftext|>.
        var qwen2 = TextTokenizer.Load(folders.Folder(LlamaFamilyFiles.Qwen2));
        Assert.False(qwen2.AddsBos);
        Assert.Null(qwen2.BosId);
        Assert.Equal(qwen2.Encode("Hello"), qwen2.EncodeSequence("Hello"));
        Assert.Equal(qwen2.SpecialTokens["<|im_end|>"], qwen2.EosId);
        Assert.Equal(qwen2.SpecialTokens["<|endoftext|>"], qwen2.PadId);

        // SmolLM2: special_tokens_map.json (an AddedToken object for BOS) wins over tokenizer_config.json.
        var smol = TextTokenizer.Load(folders.Folder(LlamaFamilyFiles.SmolLM2));
        Assert.False(smol.AddsBos);
        Assert.Equal(1, smol.BosId);
        Assert.Equal(2, smol.EosId);
        Assert.Equal(2, smol.PadId);

        // add_bos_token decides where tokenizer_config.json says it, both ways.
        string adds = folders.Copy(LlamaFamilyFiles.SmolLM2, "smollm2-adds-bos");
        LlamaFamilyFiles.WriteJson(adds, "tokenizer_config.json", new JsonObject { ["add_bos_token"] = true });
        Assert.True(TextTokenizer.Load(adds).AddsBos);
        string noBos = folders.Copy(LlamaFamilyFiles.Llama3, "llama3-no-bos");
        LlamaFamilyFiles.WriteJson(noBos, "tokenizer_config.json", new JsonObject { ["add_bos_token"] = false, ["eos_token"] = "<|eot_id|>" });
        var instruct = TextTokenizer.Load(noBos);
        Assert.False(instruct.AddsBos);
        Assert.Equal(instruct.SpecialTokens["<|begin_of_text|>"], instruct.BosId);
        Assert.Equal(instruct.SpecialTokens["<|eot_id|>"], instruct.EosId);

        // The tokenize transform's AddBos needs a BOS, which Qwen2 lacks; AddEos is fine.
        var e = Assert.Throws<ArgumentException>(() => new TokenizeEstimator(new TokenizeOptions { Tokenizer = qwen2, AddBos = true }));
        Assert.Contains("AddBos needs a beginning-of-sequence token", e.Message);
        _ = new TokenizeEstimator(new TokenizeOptions { Tokenizer = qwen2, AddEos = true });
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void DecodeGivesBackTheText(string layout)
    {
        var tokenizer = TextTokenizer.Load(folders.Folder(layout));
        foreach (string text in TokenizerTexts.Mixed)
        {
            // Qwen2 normalizes to NFC; every text here is in NFC already.
            Assert.Equal(text, tokenizer.Decode(tokenizer.Encode(text)));
        }
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void ALoadedTokenizerSavesItsFilesAsTheyWere(string layout)
    {
        var loaded = TextTokenizer.Load(folders.Folder(layout));
        string saved = folders.Folder(layout) + "-saved";
        loaded.Save(saved);
        var files = Directory.GetFiles(folders.Folder(layout)).Select(f => Path.GetFileName(f)).Order().ToList();
        Assert.Equal(files, Directory.GetFiles(saved).Select(f => Path.GetFileName(f)).Order().ToList());
        foreach (string file in files) Assert.Equal(File.ReadAllBytes(Path.Combine(folders.Folder(layout), file)), File.ReadAllBytes(Path.Combine(saved, file)));

        var reloaded = TextTokenizer.Load(saved);
        foreach (string text in TokenizerTexts.Mixed) Assert.Equal(loaded.Encode(text), reloaded.Encode(text));
        Assert.Equal((loaded.BosId, loaded.EosId, loaded.PadId, loaded.AddsBos), (reloaded.BosId, reloaded.EosId, reloaded.PadId, reloaded.AddsBos));

        // Built in memory from the loaded vocabulary, it is written as vocab.json, merges.txt and a tokenizer.json
        // that keeps the pattern and ignore_merges.
        string written = folders.Folder(layout) + "-written";
        TextTokenizer.FromVocabulary(loaded.Vocabulary!).Save(written);
        var rewritten = TextTokenizer.Load(written);
        Assert.Equal((loaded.Vocabulary!.Pattern, loaded.Vocabulary.IgnoreMerges), (rewritten.Vocabulary!.Pattern, rewritten.Vocabulary.IgnoreMerges));
        foreach (string text in TokenizerTexts.Mixed) Assert.Equal(loaded.Encode(text), rewritten.Encode(text));
    }

    public static TheoryData<string, string, string> Unsupported => new()
    {
        { "model.type", "\"WordPiece\"", "model type is \"WordPiece\"; only byte-level \"BPE\" is supported" },
        { "normalizer", "{\"type\": \"Lowercase\"}", "normalizer \"Lowercase\" is not supported" },
        { "pre_tokenizer", "{\"type\": \"Metaspace\", \"replacement\": \"▁\"}", "pre_tokenizer \"Metaspace\" is not supported" },
        { "pre_tokenizer", "{\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Whitespace\"}, {\"type\": \"ByteLevel\", \"use_regex\": false}]}", "pre_tokenizer Sequence [Whitespace, ByteLevel] is not supported" },
        { "pre_tokenizer.pretokenizers.0.pattern", "{\"String\": \" \"}", "pre_tokenizer Split pattern {\"String\":\" \"} is not supported" },
        { "pre_tokenizer.pretokenizers.0.behavior", "\"Removed\"", "pre_tokenizer Split has behavior \"Removed\", invert false; only \"Isolated\", not inverted, is supported" },
        { "pre_tokenizer.pretokenizers.0.pattern", "{\"Regex\": \"(\\\\p{L}\"}", "pre_tokenizer Split regex \"(\\p{L}\" is not a .NET regex" },
        { "pre_tokenizer.pretokenizers.1.add_prefix_space", "true", "pre_tokenizer ByteLevel has add_prefix_space=true, which is not supported" },
        { "post_processor", "{\"type\": \"RobertaProcessing\"}", "post_processor \"RobertaProcessing\" is not supported" },
        { "post_processor.processors.1.single", "[{\"Sequence\": {\"id\": \"A\"}}, {\"SpecialToken\": {\"id\": \"<|eot_id|>\"}}]", "post_processor \"TemplateProcessing\" single [{\"Sequence\":{\"id\":\"A\"}},{\"SpecialToken\":{\"id\":\"<|eot_id|>\"}}] is not supported" },
        { "added_tokens.4.rstrip", "true", "added_tokens[\"<|eot_id|>\"] has rstrip=true, which is not supported" },
        { "model.byte_fallback", "true", "model.byte_fallback is true, which is not supported (SentencePiece's BPE, as Llama 2 ships it; it is read from the tokenizer.model beside tokenizer.json, and there is none)" },
    };

    [Theory]
    [MemberData(nameof(Unsupported))]
    public void UnsupportedSettingsNameTheFileAndTheKey(string key, string json, string expected)
    {
        string dir = folders.Copy(LlamaFamilyFiles.Llama3, $"unsupported-{Guid.NewGuid():N}");
        string path = Path.Combine(dir, "tokenizer.json");
        var root = JsonNode.Parse(File.ReadAllText(path))!;
        string[] parts = key.Split('.');
        JsonNode parent = parts[..^1].Aggregate(root, (node, part) => int.TryParse(part, out int i) ? node[i]! : node[part]!);
        if (parent is JsonArray array) array[int.Parse(parts[^1])] = JsonNode.Parse(json);
        else parent[parts[^1]] = JsonNode.Parse(json);
        File.WriteAllText(path, root.ToJsonString());

        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Equal(path, e.FilePath);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void ATokenTheConfigNamesMustExist()
    {
        string dir = folders.Copy(LlamaFamilyFiles.Qwen2, "qwen2-bad-eos");
        LlamaFamilyFiles.WriteJson(dir, "tokenizer_config.json", new JsonObject { ["eos_token"] = new JsonObject { ["content"] = "<|nope|>" } });
        var e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Equal(Path.Combine(dir, "tokenizer_config.json"), e.FilePath);
        Assert.Contains("eos_token \"<|nope|>\" is not a token of the tokenizer", e.Message);

        LlamaFamilyFiles.WriteJson(dir, "tokenizer_config.json", new JsonObject { ["add_bos_token"] = true, ["bos_token"] = null });
        e = Assert.Throws<DataFileException>(() => TextTokenizer.Load(dir));
        Assert.Contains("BOS is to be added (add_bos_token, or the tokenizer's format), but bos_token is null", e.Message);
    }
}
