namespace MLNetFinetune.Tokenization;

/// <summary>What a tokenizer format says about BOS and EOS by itself: Llama 3's post-processor, a SentencePiece model.</summary>
internal sealed record FormatTokens
{
    public string? Bos { get; init; }

    public string? Eos { get; init; }

    public bool AddsBos { get; init; }
}

/// <summary>The ids of BOS, EOS and padding, the text of EOS, and whether Hugging Face's encoding puts BOS first.</summary>
internal sealed record SequenceTokens(int? BosId, int? EosId, string? EosToken, int? PadId, bool AddsBos)
{
    /// <summary>
    /// Each token is what special_tokens_map.json or tokenizer_config.json name (null there: none), else what the format
    /// says, else GPT-NeoX's convention: <c>&lt;|endoftext|&gt;</c> at both ends. Padding is the named pad token, else
    /// <c>&lt;|padding|&gt;</c>, else end of sequence. BOS is added when tokenizer_config.json's add_bos_token says so, else
    /// when the format does.
    /// </summary>
    public static SequenceTokens Resolve(TokenizerConfig? config, IReadOnlyDictionary<string, int> special, IReadOnlyDictionary<string, int>? vocabulary, FormatTokens format)
    {
        string? endOfText = special.ContainsKey(TextTokenizer.EndOfText) ? TextTokenizer.EndOfText : null;
        var bos = Named(config, "bos_token", format.Bos ?? endOfText);
        var eos = Named(config, "eos_token", format.Eos ?? endOfText);
        var pad = Named(config, "pad_token", null);
        int? bosId = IdOf(bos, "bos_token", special, vocabulary), eosId = IdOf(eos, "eos_token", special, vocabulary);
        int? padId = IdOf(pad, "pad_token", special, vocabulary) ?? (special.TryGetValue(TextTokenizer.Padding, out int padding) ? padding : eosId);
        bool addsBos = config?.AddBosToken ?? format.AddsBos;
        // A format's own BOS always exists, so a file said one or the other: add_bos_token true, or bos_token null.
        if (addsBos && bosId == null)
            throw HfTokenizerFiles.Bad((config?.AddBosToken == true ? config.ConfigPath : bos.File)!, "BOS is to be added (add_bos_token, or the tokenizer's format), but bos_token is null");
        return new SequenceTokens(bosId, eosId, eos.Token, padId, addsBos);
    }

    static (string? Token, string? File) Named(TokenizerConfig? config, string key, string? otherwise) =>
        config != null && config.Names(key, out string? token, out string file) ? (token, file) : (otherwise, null);

    static int? IdOf((string? Token, string? File) named, string key, IReadOnlyDictionary<string, int> special, IReadOnlyDictionary<string, int>? vocabulary)
    {
        if (named.Token is not { } token) return null;
        if (special.TryGetValue(token, out int id) || vocabulary?.TryGetValue(token, out id) == true) return id;
        // Tokens the format names are its own; only a file can name one the tokenizer lacks.
        throw HfTokenizerFiles.Bad(named.File!, $"{key} \"{token}\" is not a token of the tokenizer");
    }
}
