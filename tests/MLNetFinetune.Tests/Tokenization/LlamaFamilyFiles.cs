using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Data.Analysis;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

/// <summary>
/// Tokenizer folders laid out as Llama 3, Qwen2 and SmolLM2 ship them (tokenizer.json, tokenizer_config.json,
/// special_tokens_map.json), over a small vocabulary our trainer learns from the bundled documentation and the test
/// texts: the real files cannot be downloaded here, their structure is what matters.
/// </summary>
static class LlamaFamilyFiles
{
    /// <summary>Llama 3's Split regex (also Llama 3.1 / 3.2).</summary>
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Qwen2's: Llama 3's with single digits.</summary>
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    public const string Llama3 = "llama3", Qwen2 = "qwen2", SmolLM2 = "smollm2", Gpt2 = "gpt2", Llama3OverGpt2 = "llama3-gpt2";

    /// <summary>The layouts over the small trained vocabulary.</summary>
    public static readonly string[] Layouts = [Llama3, Qwen2, SmolLM2];

    /// <summary>
    /// Those, and two at full scale over GPT-2's 50,257 tokens (real Tiktoken ranks, as Llama 3's are): GPT-2's own files
    /// as this project writes them, and Llama 3's layout over GPT-2's ranks (108,299 merges).
    /// </summary>
    public static readonly string[] ReferenceLayouts = [.. Layouts, Gpt2, Llama3OverGpt2];

    /// <summary>
    /// Words Llama 3's file holds whole without a merge that makes them, so only ignore_merges reaches them. Some are pieces
    /// only a regex reading code points makes ("👋hi", " bold𝐀x", " 𠀀rare"), one only a regex reading UTF-16 would
    /// (" 𝟏𝟐𝟑": Hugging Face cuts the space off digits).
    /// </summary>
    public static readonly string[] UnmergedWords = [" Ünïcödé", "日本語", "\n\n\n", " ellipsis", "👋hi", " bold𝐀x", " 𠀀rare", " 𝟏𝟐𝟑"];

    static readonly Lazy<BpeVocabulary> Trained = new(() => BpeTrainer.Train(
        new DataFrame(new StringDataFrameColumn("Text", [File.ReadAllText(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl")), .. TokenizerTexts.Mixed])),
        new BpeTrainerOptions { VocabSize = 700, SpecialTokens = [] }).Vocabulary!);

    public static string Write(string layout, string directory)
    {
        Directory.CreateDirectory(directory);
        var trained = Trained.Value;
        switch (layout)
        {
            case Llama3:
                WriteLlama3(directory, trained.Tokens, UnmergedWords);
                break;
            case Llama3OverGpt2:
                WriteLlama3(directory, Gpt2Vocabulary.Value.Tokens.Where(t => t.Key != TextTokenizer.EndOfText).ToDictionary(), []);
                break;
            case Gpt2:
                TextTokenizer.FromVocabulary(Gpt2Vocabulary.Value).Save(directory);
                break;
            case Qwen2:
            {
                // The trained vocabulary as it is (one merge per token, in id order), merges as pairs (tokenizers ≥ 0.20),
                // NFC, and a non-special added token beside the specials.
                var vocab = new Dictionary<string, int>(trained.Tokens);
                var added = new[] { ("<|endoftext|>", true), ("<|im_start|>", true), ("<|im_end|>", true), ("<think>", false) }
                    .Select((t, i) => (t.Item1, vocab.Count + i, t.Item2)).ToList();
                WriteTokenizerJson(directory, vocab, trained.Merges.Select(m => (JsonNode)new JsonArray(m.Left, m.Right)), added, normalizer: "NFC",
                    SequenceOf("pretokenizers", Split(Qwen2Pattern), ByteLevelStep(useRegex: false)), ByteLevelStep(useRegex: false), ignoreMerges: false);
                WriteJson(directory, "tokenizer_config.json", new JsonObject
                {
                    ["bos_token"] = null, ["eos_token"] = "<|im_end|>", ["pad_token"] = "<|endoftext|>", ["errors"] = "replace", ["tokenizer_class"] = "Qwen2Tokenizer",
                });
                break;
            }
            case SmolLM2:
            {
                // Specials take the first ids; digits are split one by one before GPT-2's ByteLevel.
                string[] specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
                var vocab = specials.Select((t, i) => (t, i)).Concat(trained.Tokens.Select(t => (t.Key, t.Value + specials.Length))).ToDictionary(t => t.Item1, t => t.Item2);
                var added = specials.Select((t, i) => (t, i, true)).ToList();
                WriteTokenizerJson(directory, vocab, trained.Merges.Select(m => (JsonNode)$"{m.Left} {m.Right}"), added, normalizer: null,
                    SequenceOf("pretokenizers", new JsonObject { ["type"] = "Digits", ["individual_digits"] = true }, ByteLevelStep(useRegex: true)),
                    ByteLevelStep(useRegex: true), ignoreMerges: false);
                WriteJson(directory, "special_tokens_map.json", new JsonObject
                {
                    ["bos_token"] = new JsonObject { ["content"] = "<|im_start|>", ["lstrip"] = false, ["normalized"] = false, ["rstrip"] = false, ["single_word"] = false },
                    ["eos_token"] = "<|im_end|>", ["pad_token"] = "<|im_end|>", ["unk_token"] = "<|endoftext|>",
                });
                WriteJson(directory, "tokenizer_config.json", new JsonObject { ["bos_token"] = "<|endoftext|>", ["eos_token"] = "<|endoftext|>", ["tokenizer_class"] = "GPT2Tokenizer" });
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(layout), layout, null);
        }
        return directory;
    }

    // Ids are Tiktoken ranks; merges are every split of a token into two tokens, by rank of the result, as transformers'
    // converter from Tiktoken writes them; words without a merge follow, then the specials; ignore_merges is on.
    static void WriteLlama3(string directory, IReadOnlyDictionary<string, int> ranks, string[] unmergedWords)
    {
        var vocab = new Dictionary<string, int>(ranks);
        foreach (string word in unmergedWords) vocab.TryAdd(Spell(word), vocab.Count);
        var merges = new List<(string Left, string Right, int Rank)>();
        foreach (var (token, rank) in ranks.Where(t => t.Key.Length > 1))
        {
            var splits = Enumerable.Range(1, token.Length - 1).Select(i => (Left: token[..i], Right: token[i..]))
                .Where(s => ranks.ContainsKey(s.Left) && ranks.ContainsKey(s.Right));
            merges.AddRange(splits.OrderBy(s => ranks[s.Left]).ThenBy(s => ranks[s.Right]).Select(s => (s.Left, s.Right, rank)));
        }
        string[] specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"];
        var added = specials.Select((t, i) => (t, vocab.Count + i, true)).ToList();
        var template = new JsonObject
        {
            ["type"] = "TemplateProcessing",
            ["single"] = new JsonArray(Special("<|begin_of_text|>"), Slot("A")),
            ["pair"] = new JsonArray(Special("<|begin_of_text|>"), Slot("A"), Special("<|begin_of_text|>"), Slot("B")),
            ["special_tokens"] = new JsonObject
            {
                ["<|begin_of_text|>"] = new JsonObject { ["id"] = "<|begin_of_text|>", ["ids"] = new JsonArray(added[0].Item2), ["tokens"] = new JsonArray("<|begin_of_text|>") },
            },
        };
        WriteTokenizerJson(directory, vocab, merges.OrderBy(m => m.Rank).Select(m => (JsonNode)$"{m.Left} {m.Right}"), added, normalizer: null,
            SequenceOf("pretokenizers", Split(Llama3Pattern), ByteLevelStep(useRegex: false)),
            SequenceOf("processors", ByteLevelStep(useRegex: true, addPrefixSpace: true), template), ignoreMerges: true);
        WriteJson(directory, "tokenizer_config.json", new JsonObject
        {
            ["bos_token"] = "<|begin_of_text|>", ["eos_token"] = "<|end_of_text|>", ["model_max_length"] = 131072, ["tokenizer_class"] = "PreTrainedTokenizerFast",
        });
    }

    // GPT-2's vocabulary and merges, rebuilt from the packaged ranks.
    static readonly Lazy<BpeVocabulary> Gpt2Vocabulary = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("mlnetft-gpt2").FullName;
        try
        {
            return TextTokenizer.Load(Gpt2Files.WriteTo(dir)).Vocabulary!;
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    });

    /// <summary>A word in GPT-2's byte alphabet, as vocabularies spell it.</summary>
    public static string Spell(string text) => ByteLevel.Encode(Encoding.UTF8.GetBytes(text));

    static void WriteTokenizerJson(string directory, Dictionary<string, int> vocab, IEnumerable<JsonNode> merges, List<(string Content, int Id, bool Special)> added,
        string? normalizer, JsonNode preTokenizer, JsonNode postProcessor, bool ignoreMerges)
    {
        WriteJson(directory, "tokenizer.json", new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(added.Select(a => (JsonNode)new JsonObject
            {
                ["id"] = a.Id, ["content"] = a.Content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = a.Special,
            }).ToArray()),
            ["normalizer"] = normalizer == null ? null : new JsonObject { ["type"] = normalizer },
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = postProcessor,
            ["decoder"] = ByteLevelStep(useRegex: true),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null, ["end_of_word_suffix"] = null,
                ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = ignoreMerges,
                ["vocab"] = new JsonObject(vocab.OrderBy(t => t.Value).Select(t => KeyValuePair.Create(t.Key, (JsonNode?)t.Value))),
                ["merges"] = new JsonArray(merges.ToArray()),
            },
        });
    }

    static JsonObject Split(string regex) => new()
    {
        ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = regex }, ["behavior"] = "Isolated", ["invert"] = false,
    };

    static JsonObject ByteLevelStep(bool useRegex, bool addPrefixSpace = false) => new()
    {
        ["type"] = "ByteLevel", ["add_prefix_space"] = addPrefixSpace, ["trim_offsets"] = !addPrefixSpace, ["use_regex"] = useRegex,
    };

    static JsonObject SequenceOf(string key, params JsonNode[] steps) => new() { ["type"] = "Sequence", [key] = new JsonArray(steps) };

    static JsonObject Special(string id) => new() { ["SpecialToken"] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };

    static JsonObject Slot(string id) => new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };

    public static void WriteJson(string directory, string name, JsonNode node) =>
        File.WriteAllText(Path.Combine(directory, name), node.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
}

/// <summary>The texts every tokenizer test encodes: the awkward cases of pre-tokenization, byte-level BPE and byte fallback.</summary>
static class TokenizerTexts
{
    public static readonly string[] Mixed =
    [
        "Hello world! Don't I'LL we've they're it's you'D",
        "   leading spaces, runs    of   spaces and trailing   ",
        "new\nlines\n\n\nand\r\nwindows\r\n\r\nendings \n \n  x\n\n",
        "tabs\tand\t\ttabs \t mixed\t",
        "digits 12345 and 3.14159, 1,000,000 and 2024-06-01; 007 x1y22z333 ٣٤٥ Ⅻ ½ x  1 and  22\t 3",
        "contractions: don't I'LL you'RE she'd 'tis",
        "naïve café Ünïcödé 日本語 中文字符 Ελληνικά русский",
        "emoji 👋🏽 hi👋🏽there 👋hi (🏽ok) 🇨🇭 👩‍👩‍👧",
        "math 𝐀𝐁𝐂 bold𝐀x 𝟏𝟐𝟑 and 𠀀rare",
        "symbols ∑∫√ → «quotes» ‘single’ — dashes… ellipsis!!! ???",
        "control\u0001\u001b[0m\u007f end\u00a0nbsp\u3000ideographic\u2028line",
        "<|eot_id|>added tokens<|end_of_text|> in <|im_start|>text<|im_end|> and <think>\n",
        "<|begin_of_text|><|begin_of_text|>",
        " café don 日本語\n\n\n",
        "",
        " ",
        "\n",
    ];
}
