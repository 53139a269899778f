using System.Text.Json.Nodes;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// The settings transformers keeps beside a tokenizer: <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c>
/// name the tokens that begin and end a sequence and pad a batch (<c>bos_token</c>, <c>eos_token</c>, <c>pad_token</c>: a
/// string, an AddedToken object or null), <c>add_bos_token</c> says whether encoding puts BOS first, and
/// <c>added_tokens_decoder</c> lists the added tokens (SentencePiece tokenizers have no tokenizer.json to list them). Where
/// both files name a token, special_tokens_map.json wins, as in transformers. Errors name the file and the key.
/// </summary>
internal sealed class TokenizerConfig
{
    public const string ConfigFile = "tokenizer_config.json", SpecialTokensMapFile = "special_tokens_map.json";

    readonly Dictionary<string, (string? Token, string File)> _named = [];

    TokenizerConfig() { }

    /// <summary>The tokenizer_config.json read, if there is one.</summary>
    public string? ConfigPath { get; private set; }

    /// <summary>Whether encoding adds BOS, when tokenizer_config.json says.</summary>
    public bool? AddBosToken { get; private set; }

    /// <summary>The added tokens tokenizer_config.json lists in <c>added_tokens_decoder</c>.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; private set; } = [];

    /// <summary>Reads the files of <paramref name="directory"/>; either or both may be absent.</summary>
    public static TokenizerConfig Read(string directory)
    {
        var config = new TokenizerConfig();
        string path = Path.Combine(directory, ConfigFile);
        if (File.Exists(path))
        {
            HfTokenizerFiles.WrongShapeIsBadData(path, () =>
            {
                var root = HfTokenizerFiles.ParseJson(path) as JsonObject ?? throw HfTokenizerFiles.Bad(path, "expected a JSON object");
                config.ConfigPath = path;
                config.ReadNamedTokens(root, path);
                config.AddBosToken = root["add_bos_token"]?.GetValue<bool>();
                config.AddedTokens = ReadAddedTokensDecoder(root["added_tokens_decoder"], path);
                return config;
            });
        }
        path = Path.Combine(directory, SpecialTokensMapFile);
        if (File.Exists(path))
        {
            HfTokenizerFiles.WrongShapeIsBadData(path, () =>
                config.ReadNamedTokens(HfTokenizerFiles.ParseJson(path) as JsonObject ?? throw HfTokenizerFiles.Bad(path, "expected a JSON object"), path));
        }
        return config;
    }

    /// <summary>
    /// Whether a file names the token for <paramref name="key"/> (<c>bos_token</c>, <c>eos_token</c>, <c>pad_token</c>):
    /// <paramref name="token"/> is null where the file says null, which means the tokenizer has none.
    /// </summary>
    public bool Names(string key, out string? token, out string file)
    {
        bool named = _named.TryGetValue(key, out var entry);
        (token, file) = entry;
        return named;
    }

    TokenizerConfig ReadNamedTokens(JsonObject root, string path)
    {
        foreach (string key in new[] { "bos_token", "eos_token", "pad_token" })
        {
            if (!root.TryGetPropertyValue(key, out JsonNode? value)) continue;
            _named[key] = (value switch
            {
                null => null,
                JsonObject token => token["content"]?.GetValue<string>() ?? throw HfTokenizerFiles.Bad(path, $"{key} has no \"content\""),
                _ => value.GetValue<string>(),
            }, path);
        }
        return this;
    }

    static List<AddedToken> ReadAddedTokensDecoder(JsonNode? node, string path)
    {
        var added = new List<AddedToken>();
        if (node is null) return added;
        if (node is not JsonObject byId) throw HfTokenizerFiles.Bad(path, "added_tokens_decoder is not an object");
        foreach (var (key, token) in byId)
        {
            if (!int.TryParse(key, out int id)) throw HfTokenizerFiles.Bad(path, $"added_tokens_decoder key \"{key}\" is not an id");
            added.Add(HfTokenizerFiles.ReadAddedToken(path, $"added_tokens_decoder[\"{key}\"]", token, id));
        }
        return added;
    }
}
