using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// Reads and writes Hugging Face tokenizer files: <c>vocab.json</c> + <c>merges.txt</c> (GPT-2 layout) and
/// <c>tokenizer.json</c> (the <c>tokenizers</c> library's format, which Pythia/GPT-NeoX, Llama 3, Qwen2 and SmolLM2
/// checkpoints ship). Every error names the file and what is wrong in it.
/// </summary>
public static class HfTokenizerFiles
{
    /// <summary>The file names of a tokenizer in a model directory (<c>tokenizer.model</c>: SentencePiece, as Llama 2 ships it).</summary>
    public const string VocabFile = "vocab.json", MergesFile = "merges.txt", TokenizerJsonFile = "tokenizer.json", SentencePieceModelFile = "tokenizer.model";

    /// <summary>A tokenizer.json's byte-level BPE, and the token its post-processor puts before the text (Llama 3's BOS), if any.</summary>
    public sealed record TokenizerJson(BpeVocabulary Vocabulary, string? BosFromTemplate);

    /// <summary>Reads vocab.json + merges.txt; <paramref name="specialTokens"/> lists tokens matched whole (e.g. <c>&lt;|endoftext|&gt;</c>).</summary>
    public static BpeVocabulary ReadVocabAndMerges(string vocabPath, string mergesPath, IEnumerable<string>? specialTokens = null)
    {
        var tokens = ReadVocab(vocabPath);
        var merges = ReadMerges(mergesPath);
        var special = (specialTokens ?? DefaultSpecialTokens(tokens)).Select(t => new AddedToken(t, tokens.TryGetValue(t, out int id) ? id
            : throw new InvalidDataException($"{vocabPath}: special token '{t}' is not in the vocabulary."))).ToList();
        return new BpeVocabulary(tokens, merges, special, $"{vocabPath} + {mergesPath}");
    }

    /// <summary>
    /// Reads a tokenizer.json whose model is byte-level BPE: GPT-2, GPT-NeoX/Pythia, Llama 3, Qwen2, SmolLM2 and their kin.
    /// Settings that would give other ids than Hugging Face's are refused with the key that holds them.
    /// </summary>
    public static TokenizerJson ReadTokenizerJson(string path) => WrongShapeIsBadData(path, () => ReadTokenizerJsonNodes(path));

    /// <summary>
    /// Whether a tokenizer.json holds SentencePiece's BPE (<c>byte_fallback</c>: bytes as &lt;0x0A&gt; tokens, "▁" for
    /// spaces), as Llama 2 and TinyLlama ship it beside their tokenizer.model.
    /// </summary>
    public static bool IsSentencePieceBpe(string path) =>
        WrongShapeIsBadData(path, () => ParseJson(path)["model"]?["byte_fallback"]?.GetValue<bool>() == true);

    static TokenizerJson ReadTokenizerJsonNodes(string path)
    {
        JsonNode root = ParseJson(path);
        JsonNode model = root["model"] ?? throw Bad(path, "no \"model\" object");
        string? type = model["type"]?.GetValue<string>();
        if (type != null && type != "BPE") throw Bad(path, $"model type is \"{type}\"; only byte-level \"BPE\" is supported");
        // Settings that would change the ids; byte-level BPE files leave them off.
        foreach (var (setting, off) in new (string, Func<JsonNode?, bool>)[]
        {
            ("dropout", n => n == null), ("continuing_subword_prefix", n => n == null || n.GetValue<string>() == ""),
            ("end_of_word_suffix", n => n == null || n.GetValue<string>() == ""), ("byte_fallback", n => n == null || !n.GetValue<bool>()),
        })
        {
            if (off(model[setting])) continue;
            string hint = setting == "byte_fallback"
                ? $" (SentencePiece's BPE, as Llama 2 ships it; it is read from the {SentencePieceModelFile} beside tokenizer.json, and there is none)"
                : "";
            throw Bad(path, $"model.{setting} is {model[setting]!.ToJsonString()}, which is not supported{hint}");
        }
        bool ignoreMerges = model["ignore_merges"]?.GetValue<bool>() ?? false;
        string pattern = ReadPreTokenizer(path, root["pre_tokenizer"]);
        string? normalizer = root["normalizer"]?["type"]?.GetValue<string>();
        if (normalizer != null && normalizer != "NFC") throw Bad(path, $"normalizer \"{normalizer}\" is not supported (only NFC or none)");

        var tokens = new Dictionary<string, int>(StringComparer.Ordinal);
        if (model["vocab"] is not JsonObject vocab) throw Bad(path, "model.vocab is missing or not an object");
        foreach (var (token, id) in vocab) tokens[token] = ReadId(path, $"model.vocab[\"{token}\"]", id);

        var merges = new List<(string, string)>();
        if (model["merges"] is not JsonArray mergeArray) throw Bad(path, "model.merges is missing or not an array");
        for (int i = 0; i < mergeArray.Count; i++)
        {
            // Older files write "a b", newer ones ["a", "b"] (which allows spaces inside tokens).
            merges.Add(mergeArray[i] switch
            {
                JsonValue v when v.TryGetValue(out string? pair) => SplitMerge(pair, () => Bad(path, $"model.merges[{i}] \"{pair}\" is not two tokens separated by one space")),
                JsonArray { Count: 2 } a when a[0] is JsonValue l && l.TryGetValue(out string? left) && a[1] is JsonValue r && r.TryGetValue(out string? right) => (left, right),
                _ => throw Bad(path, $"model.merges[{i}] is neither \"left right\" nor [\"left\", \"right\"]"),
            });
        }

        var added = new List<AddedToken>();
        switch (root["added_tokens"])
        {
            case null:
                added.AddRange(DefaultSpecialTokens(tokens).Select(t => new AddedToken(t, tokens[t])));
                break;
            case JsonArray list:
                foreach (var token in list)
                {
                    string content = token?["content"]?.GetValue<string>() ?? throw Bad(path, "an added_tokens entry has no \"content\"");
                    added.Add(ReadAddedToken(path, $"added_tokens[\"{content}\"]", token, ReadId(path, $"added_tokens[\"{content}\"].id", token["id"])));
                }
                break;
            default:
                throw Bad(path, "added_tokens is not an array");
        }
        string? bos = ReadPostProcessor(path, root["post_processor"], added);
        return new TokenizerJson(new BpeVocabulary(tokens, merges, added, path, normalizer == "NFC", pattern, ignoreMerges), bos);
    }

    /// <summary>
    /// An added token (tokenizer.json's added_tokens, tokenizer_config.json's added_tokens_decoder). Hugging Face matches
    /// it whole in the text; lstrip, rstrip and single_word would make it take spaces around it, which is not done here.
    /// </summary>
    internal static AddedToken ReadAddedToken(string path, string where, JsonNode? token, int id)
    {
        string content = token?["content"]?.GetValue<string>() ?? throw Bad(path, $"{where} has no \"content\"");
        foreach (string flag in new[] { "lstrip", "rstrip", "single_word" })
            if (token![flag]?.GetValue<bool>() == true) throw Bad(path, $"{where} has {flag}=true, which is not supported");
        return new AddedToken(content, id, token!["special"]?.GetValue<bool>() ?? true, token["normalized"]?.GetValue<bool>() ?? false);
    }

    // The pre-tokenizers of byte-level BPE models, each read as the one regex that splits text into the same pieces:
    //   ByteLevel (use_regex)                                    GPT-2, GPT-NeoX: GPT-2's pattern
    //   Sequence [Split (a regex, Isolated), ByteLevel (no regex)] Llama 3, Qwen2: the Split regex
    //   Sequence [Digits (individual_digits), ByteLevel (use_regex)] SmolLM2, StarCoder: GPT-2's, with each digit alone
    static string ReadPreTokenizer(string path, JsonNode? preTokenizer)
    {
        if (preTokenizer is null) throw Bad(path, "no pre_tokenizer: byte-level BPE needs GPT-2's ByteLevel pre-tokenizer");
        var steps = TypeOf(preTokenizer) == "Sequence"
            ? (preTokenizer["pretokenizers"] as JsonArray ?? throw Bad(path, "pre_tokenizer Sequence has no \"pretokenizers\" array")).ToList()
            : [preTokenizer];
        string supported = "byte-level BPE reads ByteLevel, Sequence [Split, ByteLevel] (Llama 3, Qwen2) and Sequence [Digits, ByteLevel] (SmolLM2)";
        if (steps.Count is 0 or > 2 || TypeOf(steps[^1]) != "ByteLevel")
            throw Bad(path, $"pre_tokenizer {Describe(preTokenizer)} is not supported; {supported}");
        var byteLevel = steps[^1]!;
        if (byteLevel["add_prefix_space"]?.GetValue<bool>() == true) throw Bad(path, "pre_tokenizer ByteLevel has add_prefix_space=true, which is not supported");
        bool useRegex = byteLevel["use_regex"]?.GetValue<bool>() ?? true;
        if (steps.Count == 1)
            return useRegex ? ByteLevel.Gpt2Pattern : throw Bad(path, "pre_tokenizer ByteLevel has use_regex=false, which is not supported (nothing would split the text)");

        var first = steps[0]!;
        string? kind = TypeOf(first);
        // Llama 3 and Qwen2 turn ByteLevel's own regex off after their Split; SmolLM2 keeps GPT-2's on after Digits.
        if (kind is "Split" or "Digits" && useRegex != (kind == "Digits"))
            throw Bad(path, $"pre_tokenizer ByteLevel after {kind} has use_regex={(useRegex ? "true" : "false")}, which is not supported");
        switch (kind)
        {
            case "Split":
                string? regex = first["pattern"]?["Regex"]?.GetValue<string>();
                if (regex is null) throw Bad(path, $"pre_tokenizer Split pattern {Json(first["pattern"])} is not supported (only {{\"Regex\": ...}})");
                if (first["behavior"]?.GetValue<string>() != "Isolated" || first["invert"]?.GetValue<bool>() == true)
                    throw Bad(path, $"pre_tokenizer Split has behavior {Json(first["behavior"])}, invert {Json(first["invert"])}; only \"Isolated\", not inverted, is supported");
                try
                {
                    _ = new Regex(regex);
                }
                catch (ArgumentException e)
                {
                    throw Bad(path, $"pre_tokenizer Split regex \"{regex}\" is not a .NET regex: {e.Message}");
                }
                return regex;
            case "Digits":
                if (first["individual_digits"]?.GetValue<bool>() != true) throw Bad(path, "pre_tokenizer Digits has individual_digits=false, which is not supported");
                return ByteLevel.Gpt2PatternWithSingleDigits;
            default:
                throw Bad(path, $"pre_tokenizer {Describe(preTokenizer)} is not supported; {supported}");
        }
    }

    // Post-processors add tokens around the encoded text. ByteLevel only trims offsets; a TemplateProcessing whose single
    // template is a special token then the text is how Llama 3 adds its BOS. Returns that token, or null.
    static string? ReadPostProcessor(string path, JsonNode? postProcessor, IReadOnlyList<AddedToken> added)
    {
        switch (TypeOf(postProcessor))
        {
            case null or "ByteLevel":
                return null;
            case "Sequence":
                var bos = (postProcessor!["processors"] as JsonArray ?? throw Bad(path, "post_processor Sequence has no \"processors\" array"))
                    .Select(p => ReadPostProcessor(path, p, added)).Where(b => b != null).ToList();
                return bos.Count <= 1 ? bos.SingleOrDefault() : throw Bad(path, "post_processor Sequence adds more than one token before the text");
            case "TemplateProcessing":
                var single = postProcessor!["single"] as JsonArray;
                bool IsText(JsonNode? n) => n?["Sequence"]?["id"]?.GetValue<string>() == "A";
                if (single is [var only] && IsText(only)) return null;
                if (single is not [var first, var text] || !IsText(text) || first?["SpecialToken"]?["id"]?.GetValue<string>() is not { } token)
                    throw Bad(path, $"post_processor \"TemplateProcessing\" single {Json(single)} is not supported; only a special token before $A (a BOS) is");
                var ids = postProcessor["special_tokens"]?[token]?["ids"] as JsonArray;
                if (ids is not [var idNode] || added.FirstOrDefault(a => a.Content == token) is not { } addedToken || ReadId(path, $"post_processor special_tokens[\"{token}\"].ids[0]", idNode) != addedToken.Id)
                    throw Bad(path, $"post_processor \"TemplateProcessing\" special_tokens[\"{token}\"].ids {Json(ids)} is not the one id added_tokens gives \"{token}\"");
                return token;
            case var other:
                throw Bad(path, $"post_processor \"{other}\" is not supported (only ByteLevel, and TemplateProcessing that puts a BOS first)");
        }
    }

    static string? TypeOf(JsonNode? node) => node?["type"]?.GetValue<string>();

    // A value's JSON for messages, with <, > and non-ASCII characters as they are.
    static string Json(JsonNode? node) => node?.ToJsonString(new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }) ?? "none";

    static string Describe(JsonNode node) => TypeOf(node) == "Sequence"
        ? $"Sequence [{string.Join(", ", (node["pretokenizers"] as JsonArray ?? []).Select(n => n is null ? "null" : TypeOf(n)))}]"
        : $"\"{TypeOf(node)}\"";

    /// <summary>Writes vocab.json, merges.txt and tokenizer.json into <paramref name="directory"/>, each atomically.</summary>
    public static void Write(BpeVocabulary vocabulary, string directory)
    {
        Directory.CreateDirectory(directory);
        var ordered = vocabulary.Tokens.OrderBy(t => t.Value).ToList(); // the model's vocabulary; added-only tokens live in added_tokens
        var json = new JsonSerializerOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping, WriteIndented = false };

        DataFiles.WriteAtomically(Path.Combine(directory, VocabFile), s =>
            JsonSerializer.Serialize(s, ordered.ToDictionary(t => t.Key, t => t.Value), json));
        DataFiles.WriteAtomically(Path.Combine(directory, MergesFile), s =>
        {
            using var w = new StreamWriter(s, new UTF8Encoding(false), 1 << 16, leaveOpen: true) { NewLine = "\n" };
            w.WriteLine("#version: 0.2");
            foreach (var (left, right) in vocabulary.Merges) w.WriteLine($"{left} {right}");
        });

        // The tokenizers library's layout for a GPT-2-style byte-level BPE (as GPT-NeoX ships it); another pattern is a
        // Split before a ByteLevel that only maps bytes (as Llama 3 ships it).
        var byteLevel = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = true };
        var preTokenizer = vocabulary.Pattern == ByteLevel.Gpt2Pattern ? byteLevel.DeepClone() : new JsonObject
        {
            ["type"] = "Sequence",
            ["pretokenizers"] = new JsonArray(
                new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = vocabulary.Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = true, ["use_regex"] = false }),
        };
        var tokenizer = new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = new JsonArray(vocabulary.AddedTokens.OrderBy(t => t.Id).Select(t => (JsonNode)new JsonObject
            {
                ["id"] = t.Id, ["content"] = t.Content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false,
                ["normalized"] = t.Normalized, ["special"] = t.Special,
            }).ToArray()),
            ["normalizer"] = vocabulary.NormalizeNfc ? new JsonObject { ["type"] = "NFC" } : null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = byteLevel.DeepClone(),
            ["decoder"] = byteLevel.DeepClone(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["dropout"] = null, ["unk_token"] = null, ["continuing_subword_prefix"] = null,
                ["end_of_word_suffix"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = vocabulary.IgnoreMerges,
                ["vocab"] = new JsonObject(ordered.Select(t => KeyValuePair.Create(t.Key, (JsonNode?)t.Value))),
                // "a b" strings, which every tokenizers version reads (byte-level tokens hold no spaces).
                ["merges"] = new JsonArray(vocabulary.Merges.Select(m => (JsonNode)$"{m.Left} {m.Right}").ToArray()),
            },
        };
        DataFiles.WriteJson(Path.Combine(directory, TokenizerJsonFile), tokenizer);
    }

    static Dictionary<string, int> ReadVocab(string path) => WrongShapeIsBadData(path, () =>
    {
        JsonNode root = ParseJson(path);
        if (root is not JsonObject vocab) throw Bad(path, "expected a JSON object mapping each token to its id");
        var tokens = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (token, id) in vocab) tokens[token] = ReadId(path, $"\"{token}\"", id);
        if (tokens.Count == 0) throw Bad(path, "the vocabulary is empty");
        return tokens;
    });

    // JsonNode reports a value of the wrong kind (a number where a string belongs, an array where an object does) and a
    // string escape that is not UTF-16 ("\ud800") with InvalidOperationException or FormatException, which name no file.
    internal static T WrongShapeIsBadData<T>(string path, Func<T> read)
    {
        try
        {
            return read();
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException)
        {
            throw new DataFileException(path, 0, $"unexpected content: {e.Message.TrimEnd('.')}", inner: e);
        }
    }

    static List<(string, string)> ReadMerges(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file '{path}' does not exist.", path);
        var merges = new List<(string, string)>();
        // The line reader names the line and byte offset of invalid UTF-8 (a decoding StreamReader only says it failed).
        using var lines = new Utf8LineReader(File.OpenRead(path), path, MaxMergeLineBytes);
        while (lines.TryReadLine(out var bytes))
        {
            string line = Encoding.UTF8.GetString(bytes);
            long lineNumber = lines.LineNumber;
            if (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal)) continue;
            if (line.Length == 0) continue;
            merges.Add(SplitMerge(line, () => new DataFileException(path, lineNumber, $"expected two tokens separated by one space, found \"{line}\"")));
        }
        return merges;
    }

    const int MaxMergeLineBytes = 1 << 20;

    static (string, string) SplitMerge(string pair, Func<Exception> error)
    {
        int space = pair.IndexOf(' ');
        if (space <= 0 || space == pair.Length - 1 || pair.IndexOf(' ', space + 1) >= 0) throw error();
        return (pair[..space], pair[(space + 1)..]);
    }

    internal static JsonNode ParseJson(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Tokenizer file '{path}' does not exist.", path);
        byte[] bytes = File.ReadAllBytes(path);
        if (!System.Text.Unicode.Utf8.IsValid(bytes))
        {
            int offset = Utf8LineReader.FirstInvalidByte(bytes);
            throw new DataFileException(path, bytes.AsSpan(0, offset).Count((byte)'\n') + 1, $"invalid UTF-8 at byte offset {offset}", byteOffset: offset);
        }
        try
        {
            // A repeated key would otherwise surface as an ArgumentException when the object is first read.
            return JsonNode.Parse(bytes, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false }) ?? throw Bad(path, "the file holds JSON null");
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "JSON", e);
        }
    }

    static int ReadId(string path, string where, JsonNode? node) =>
        node is JsonValue v && v.TryGetValue(out int id) ? id : throw Bad(path, $"{where} is not an integer id");

    static IEnumerable<string> DefaultSpecialTokens(IReadOnlyDictionary<string, int> tokens) =>
        new[] { "<|endoftext|>", "<|padding|>" }.Where(tokens.ContainsKey);

    internal static DataFileException Bad(string path, string problem) => new(path, 0, problem);
}
