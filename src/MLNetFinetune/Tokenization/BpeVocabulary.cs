namespace MLNetFinetune.Tokenization;

/// <summary>A token matched whole in text before BPE (tokenizer.json's <c>added_tokens</c>).</summary>
/// <param name="Content">The text of the token.</param>
/// <param name="Id">Its id.</param>
/// <param name="Special">Special tokens (end of text, padding) are dropped when decoding with special tokens skipped; others, such as GPT-NeoX's runs of spaces, are ordinary text.</param>
/// <param name="Normalized">Whether the token is matched after normalization.</param>
public sealed record AddedToken(string Content, int Id, bool Special = true, bool Normalized = false);

/// <summary>
/// A byte-level BPE vocabulary as Hugging Face stores it: tokens spelled in <see cref="ByteLevel"/> characters with
/// their ids, the merges in priority order, and the special (added) tokens, which are matched whole and never merged;
/// with the settings around them that decide the ids (normalization, the pre-tokenization pattern, ignore_merges).
/// </summary>
public sealed class BpeVocabulary
{
    /// <summary>
    /// Validates and wraps the parts: the model's <paramref name="tokens"/> (byte-level spellings, plus any added token
    /// the model vocabulary lists), the merges, and the added tokens; <paramref name="source"/> names the files in errors.
    /// <paramref name="pattern"/> splits text into the pieces BPE works on (GPT-2's unless given).
    /// </summary>
    public BpeVocabulary(IReadOnlyDictionary<string, int> tokens, IReadOnlyList<(string Left, string Right)> merges,
        IReadOnlyList<AddedToken> addedTokens, string source, bool normalizeNfc = false, string pattern = ByteLevel.Gpt2Pattern, bool ignoreMerges = false)
    {
        NormalizeNfc = normalizeNfc;
        Pattern = pattern;
        IgnoreMerges = ignoreMerges;
        Tokens = tokens;
        Merges = merges;
        AddedTokens = addedTokens;
        // Longest first: a regex alternation takes the first alternative that matches, Hugging Face the longest.
        var specialTokens = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var added in addedTokens.OrderByDescending(a => a.Content.Length).ThenBy(a => a.Id))
        {
            if (added.Content.Length == 0) throw new InvalidDataException($"{source}: added token {added.Id} is empty.");
            if (added.Id is < 0 or >= MaxId) throw new InvalidDataException($"{source}: added token '{added.Content}' has id {added.Id}, outside 0..{MaxId - 1:N0}.");
            if (!specialTokens.TryAdd(added.Content, added.Id) && specialTokens[added.Content] != added.Id)
                throw new InvalidDataException($"{source}: added token '{added.Content}' has two ids.");
        }
        SpecialTokens = specialTokens;
        Source = source;
        var ids = new HashSet<int>();
        foreach (var (token, id) in tokens)
        {
            if (id < 0) throw new InvalidDataException($"{source}: token '{token}' has a negative id {id}.");
            if (id >= MaxId) throw new InvalidDataException($"{source}: token '{token}' has id {id}, above the largest id supported ({MaxId - 1:N0}).");
            if (!ids.Add(id)) throw new InvalidDataException($"{source}: id {id} is given to more than one token (one of them '{token}').");
            if (!specialTokens.ContainsKey(token) && !ByteLevel.TryDecode(token, out _))
                throw new InvalidDataException($"{source}: token '{token}' (id {id}) is not byte-level: it holds characters outside GPT-2's byte alphabet.");
        }
        foreach (var (special, id) in specialTokens)
            if (tokens.TryGetValue(special, out int vocabId) && vocabId != id)
                throw new InvalidDataException($"{source}: special token '{special}' has id {id}, but the vocabulary gives it {vocabId}.");
        for (int b = 0; b < 256; b++)
            if (!tokens.ContainsKey(ByteLevel.ByteToChar[b].ToString()))
                throw new InvalidDataException($"{source}: the vocabulary lacks the single-byte token for byte 0x{b:X2} ('{ByteLevel.ByteToChar[b]}'), which byte-level BPE needs.");
        var seen = new Dictionary<(string, string), int>();
        for (int i = 0; i < merges.Count; i++)
        {
            var (left, right) = merges[i];
            if (!seen.TryAdd(merges[i], i))
                throw new InvalidDataException($"{source}: merge {i + 1} ('{left} {right}') repeats merge {seen[merges[i]] + 1}.");
            foreach (string part in new[] { left, right, left + right })
                if (!tokens.ContainsKey(part))
                    throw new InvalidDataException($"{source}: merge {i + 1} ('{left} {right}') uses '{part}', which is not in the vocabulary.");
        }
        VocabSize = Math.Max(tokens.Count == 0 ? 0 : tokens.Values.Max() + 1, specialTokens.Count == 0 ? 0 : specialTokens.Values.Max() + 1);
    }

    /// <summary>
    /// One more than the largest id accepted: 2^28 rows is far beyond any vocabulary (Llama 3 has 128k), and an id near
    /// int.MaxValue would overflow the vocabulary size.
    /// </summary>
    public const int MaxId = 1 << 28;

    /// <summary>Every token (special ones included when the file lists them) and its id.</summary>
    public IReadOnlyDictionary<string, int> Tokens { get; }

    /// <summary>Merges, highest priority first.</summary>
    public IReadOnlyList<(string Left, string Right)> Merges { get; }

    /// <summary>Tokens matched whole before BPE (all added tokens, special or not), longest first, with their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>The added tokens with their flags, as tokenizer.json lists them.</summary>
    public IReadOnlyList<AddedToken> AddedTokens { get; }

    /// <summary>Text is put in Unicode normalization form C before encoding (GPT-NeoX's tokenizer.json asks for it).</summary>
    public bool NormalizeNfc { get; }

    /// <summary>
    /// The regex that splits text into pieces before BPE, each match a piece: <see cref="ByteLevel.Gpt2Pattern"/> for
    /// GPT-2 and GPT-NeoX, the <c>Split</c> pattern of the tokenizer.json for Llama 3 and Qwen2.
    /// </summary>
    public string Pattern { get; }

    /// <summary>A piece that is itself in the vocabulary is one token, whatever the merges say (tokenizer.json's <c>ignore_merges</c>, set by Llama 3).</summary>
    public bool IgnoreMerges { get; }

    /// <summary>Where the vocabulary came from (file names), for messages.</summary>
    public string Source { get; }

    /// <summary>One more than the largest id.</summary>
    public int VocabSize { get; }

    /// <summary>
    /// True when each merge creates a token whose id is larger than that of every earlier merge's token: then the
    /// merge priority equals id order, and a Tiktoken encoder ranking tokens by id gives the same ids as BPE over
    /// the merge list (and encodes about three times faster).
    /// </summary>
    public bool MergesFollowIdOrder()
    {
        // Every multi-byte token must come from exactly one merge, or Tiktoken could reach a token BPE cannot.
        int multiByte = Tokens.Count(t => !SpecialTokens.ContainsKey(t.Key) && t.Key.Length > 1);
        if (multiByte != Merges.Count) return false;
        int last = -1;
        foreach (var (left, right) in Merges)
        {
            int id = Tokens[left + right];
            if (id <= last) return false;
            last = id;
        }
        return true;
    }
}
