using System.Buffers;
using System.Text;
using System.Text.Unicode;
using Microsoft.ML.Tokenizers;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// Hugging Face's BPE with <c>ignore_merges</c> (Llama 3 sets it): a pre-tokenized piece that is itself in the vocabulary
/// becomes that one token, even where the merges would split it (its vocabulary comes from Tiktoken ranks, and Tiktoken
/// looks a piece up whole first). <see cref="BpeTokenizer"/> has no such setting, so this looks each piece up and hands
/// it only the others, one piece at a time.
/// </summary>
internal sealed class IgnoreMergesTokenizer : Tokenizer
{
    readonly BpeTokenizer _bpe;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _wholePieces;

    public IgnoreMergesTokenizer(BpeTokenizer bpe, BpeVocabulary vocabulary)
    {
        _bpe = bpe;
        // The vocabulary by the text each token spells (tokens that are not whole UTF-8 text can never equal a piece).
        var byText = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (token, id) in vocabulary.Tokens)
        {
            if (!vocabulary.SpecialTokens.ContainsKey(token) && ByteLevel.TryDecode(token, out byte[] bytes) && Utf8.IsValid(bytes))
                byText[Encoding.UTF8.GetString(bytes)] = id;
        }
        _wholePieces = byText.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    public override PreTokenizer? PreTokenizer => _bpe.PreTokenizer;

    public override Normalizer? Normalizer => _bpe.Normalizer;

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> input = text is null ? textSpan : text.AsSpan();
        string? normalized = null;
        if (settings.ConsiderNormalization && Normalizer is { } normalizer)
        {
            normalized = normalizer.Normalize(input);
            input = normalized;
        }
        var pieces = settings.ConsiderPreTokenization && PreTokenizer is { } preTokenizer ? preTokenizer.PreTokenize(input) : [(0, input.Length)];
        var tokens = new List<EncodedToken>();
        int consumed = 0;
        foreach (var (offset, length) in pieces)
        {
            var piece = input.Slice(offset, length);
            int before = tokens.Count;
            if (_wholePieces.TryGetValue(piece, out int id))
            {
                tokens.Add(new EncodedToken(id, ByteLevel.Encode(Encoding.UTF8.GetBytes(piece.ToString())), new Range(offset, offset + length)));
            }
            else
            {
                foreach (var token in _bpe.EncodeToTokens(piece, out _, considerPreTokenization: false, considerNormalization: false))
                    tokens.Add(new EncodedToken(token.Id, token.Value, new Range(offset + token.Offset.Start.Value, offset + token.Offset.End.Value)));
            }
            // Whole pieces only, as far as MaxTokenCount allows.
            if (tokens.Count > settings.MaxTokenCount)
            {
                tokens.RemoveRange(before, tokens.Count - before);
                break;
            }
            consumed = offset + length;
        }
        return new EncodeResults<EncodedToken> { Tokens = tokens, NormalizedText = normalized, CharsConsumed = consumed };
    }

    public override string Decode(IEnumerable<int> ids) => _bpe.Decode(ids);

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten) =>
        _bpe.Decode(ids, destination, out idsConsumed, out charsWritten);
}
