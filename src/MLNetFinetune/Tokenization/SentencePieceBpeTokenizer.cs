using System.Buffers;
using System.Text;
using System.Text.RegularExpressions;
using Google.Protobuf;
using Microsoft.ML.Tokenizers;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// SentencePiece BPE (Llama 2, TinyLlama) merged in SentencePiece's order. Microsoft.ML.Tokenizers' <see cref="LlamaTokenizer"/>
/// reads the model, normalizes the text (the "▁" prefix, spaces as "▁") and decodes, but where one piece could form in two
/// overlapping places it merges the rightmost, where SentencePiece and Hugging Face merge the leftmost: "   leading" (the
/// "▁" prefix and three spaces) became ▁|▁▁|▁l|… where SentencePiece gives ▁▁|▁|▁l|…, and code is full of such runs. So
/// the merge loop is done here, over the model's pieces and scores, as SentencePiece's bpe_model.cc does it; bytes stand
/// in for pieces the model lacks.
/// </summary>
internal sealed class SentencePieceBpeTokenizer : Tokenizer
{
    const int Normal = 1, UserDefined = 4, Unused = 5; // values of SentencePiece's piece type

    readonly LlamaTokenizer _library;
    readonly Dictionary<string, (int Id, float Score, bool Unused)>.AlternateLookup<ReadOnlySpan<char>> _pieces;
    readonly IReadOnlyDictionary<string, int> _specialTokens;
    readonly Regex? _specialPattern;
    readonly int[]? _byteIds;

    /// <summary>Wraps the library's tokenizer of <paramref name="model"/> (the tokenizer.model bytes), made with these special tokens.</summary>
    public SentencePieceBpeTokenizer(LlamaTokenizer library, byte[] model, IReadOnlyDictionary<string, int> specialTokens)
    {
        _library = library;
        _specialTokens = specialTokens;
        var pieces = new Dictionary<string, (int, float, bool)>(StringComparer.Ordinal);
        var all = ReadPieces(model);
        for (int id = 0; id < all.Count; id++)
        {
            var (piece, score, type) = all[id];
            // SentencePiece merges into normal and unused pieces (an unused one is split again afterwards).
            if (type is Normal or Unused) pieces[piece] = (id, score, type == Unused);
            else if (type == UserDefined) throw new NotSupportedException($"piece {id} '{piece}' is user-defined (matched whole in text), which is not supported");
        }
        _pieces = pieces.GetAlternateLookup<ReadOnlySpan<char>>();
        if (library.ByteFallback)
            _byteIds = Enumerable.Range(0, 256).Select(b => library.Vocabulary.TryGetValue($"<0x{b:X2}>", out int id) ? id
                : throw new NotSupportedException($"byte fallback is on, but the piece <0x{b:X2}> is missing")).ToArray();
        // Longest first: an alternation takes its first alternative that matches.
        if (specialTokens.Count > 0)
            _specialPattern = new Regex(string.Join("|", specialTokens.Keys.OrderByDescending(t => t.Length).Select(Regex.Escape)), RegexOptions.Compiled);
    }

    public override Normalizer? Normalizer => _library.Normalizer;

    protected override EncodeResults<EncodedToken> EncodeToTokens(string? text, ReadOnlySpan<char> textSpan, EncodeSettings settings)
    {
        ReadOnlySpan<char> input = text is null ? textSpan : text.AsSpan();
        string? normalized = null;
        if (settings.ConsiderNormalization && Normalizer is { } normalizer)
        {
            // The library's normalizer puts the "▁" prefix at the start of the text only, not after a special token
            // (as transformers does with legacy=false).
            normalized = normalizer.Normalize(input);
            input = normalized;
        }
        var tokens = new List<EncodedToken>();
        int start = 0;
        if (_specialPattern != null)
        {
            foreach (var match in _specialPattern.EnumerateMatches(input))
            {
                Merge(input[start..match.Index].ToString(), start, tokens);
                string special = input.Slice(match.Index, match.Length).ToString();
                tokens.Add(new EncodedToken(_specialTokens[special], special, new Range(match.Index, match.Index + match.Length)));
                start = match.Index + match.Length;
            }
        }
        Merge(input[start..].ToString(), start, tokens);

        // As many tokens as MaxTokenCount allows, without cutting a character's bytes apart.
        int kept = Math.Min(tokens.Count, settings.MaxTokenCount);
        while (kept > 0 && kept < tokens.Count && tokens[kept].Offset.Start.Equals(tokens[kept - 1].Offset.Start)) kept--;
        tokens.RemoveRange(kept, tokens.Count - kept);
        return new EncodeResults<EncodedToken> { Tokens = tokens, NormalizedText = normalized, CharsConsumed = kept == 0 ? 0 : tokens[^1].Offset.End.Value };
    }

    // SentencePiece's BPE over a stretch of normalized text: from single characters, merge the adjacent pair that joins
    // into the highest-scoring piece, the leftmost of equals, until no pair joins into a piece.
    void Merge(string text, int offset, List<EncodedToken> tokens)
    {
        if (text.Length == 0) return;
        var start = new int[text.Length];
        var length = new int[text.Length];
        int count = 0;
        for (int i = 0; i < text.Length; i += length[count++])
        {
            start[count] = i;
            length[count] = i + 1 < text.Length && char.IsSurrogatePair(text[i], text[i + 1]) ? 2 : 1;
        }
        var previous = Enumerable.Range(-1, count).ToArray();
        var next = Enumerable.Range(1, count).Select(i => i == count ? -1 : i).ToArray();
        var agenda = new PriorityQueue<(int Left, int Right, int Length), (float Score, int Left)>(HighestScoreThenLeftmost);
        Dictionary<string, (string Left, string Right)>? unusedParts = null;

        void Consider(int left, int right)
        {
            if (left < 0 || right < 0) return;
            var joined = text.AsSpan(start[left], length[left] + length[right]);
            if (!_pieces.TryGetValue(joined, out var piece)) return;
            agenda.Enqueue((left, right, joined.Length), (piece.Score, left));
            if (piece.Unused)
                (unusedParts ??= [])[joined.ToString()] = (text.Substring(start[left], length[left]), text.Substring(start[right], length[right]));
        }

        for (int i = 1; i < count; i++) Consider(i - 1, i);
        while (agenda.TryDequeue(out var pair, out _))
        {
            var (left, right, joined) = pair;
            if (length[left] == 0 || length[right] == 0 || length[left] + length[right] != joined) continue; // outdated
            length[left] = joined;
            length[right] = 0;
            next[left] = next[right];
            if (next[left] >= 0) previous[next[left]] = left;
            Consider(previous[left], left);
            Consider(left, next[left]);
        }
        for (int i = 0; i >= 0; i = next[i]) Emit(text.Substring(start[i], length[i]), offset + start[i], unusedParts, tokens);
    }

    static readonly Comparer<(float Score, int Left)> HighestScoreThenLeftmost =
        Comparer<(float Score, int Left)>.Create((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left));

    void Emit(string piece, int offset, Dictionary<string, (string Left, string Right)>? unusedParts, List<EncodedToken> tokens)
    {
        var range = new Range(offset, offset + piece.Length);
        if (_pieces.TryGetValue(piece, out var known) && !known.Unused)
        {
            tokens.Add(new EncodedToken(known.Id, piece, range));
        }
        else if (known.Unused && unusedParts?.GetValueOrDefault(piece) is var (left, right))
        {
            Emit(left, offset, unusedParts, tokens);
            Emit(right, offset + left.Length, unusedParts, tokens);
        }
        else if (_byteIds != null)
        {
            foreach (byte b in Encoding.UTF8.GetBytes(piece)) tokens.Add(new EncodedToken(_byteIds[b], $"<0x{b:X2}>", range));
        }
        else if (tokens.Count > 0 && tokens[^1].Id == _library.UnknownId && tokens[^1].Offset.End.Value == offset)
        {
            // Without byte fallback, SentencePiece makes one unknown token of a run of unknown characters.
            tokens[^1] = new EncodedToken(_library.UnknownId, _library.UnknownToken, new Range(tokens[^1].Offset.Start, range.End));
        }
        else
        {
            tokens.Add(new EncodedToken(_library.UnknownId, _library.UnknownToken, range));
        }
    }

    public override string Decode(IEnumerable<int> ids) => _library.Decode(ids, considerSpecialTokens: true);

    public override OperationStatus Decode(IEnumerable<int> ids, Span<char> destination, out int idsConsumed, out int charsWritten) =>
        _library.Decode(ids, destination, considerSpecialTokens: true, out idsConsumed, out charsWritten);

    // ModelProto field 1 holds the pieces in id order, each a message of piece (1), score (2) and type (3, Normal when absent).
    // The library keeps its parsed model internal, so the few fields needed are read here.
    static List<(string Piece, float Score, int Type)> ReadPieces(byte[] model)
    {
        var pieces = new List<(string, float, int)>();
        var input = new CodedInputStream(model);
        for (uint tag; (tag = input.ReadTag()) != 0;)
        {
            if (WireFormat.GetTagFieldNumber(tag) != 1)
            {
                input.SkipLastField();
                continue;
            }
            var entry = new CodedInputStream(input.ReadBytes().ToByteArray());
            (string Piece, float Score, int Type) piece = ("", 0, Normal);
            for (uint field; (field = entry.ReadTag()) != 0;)
            {
                switch (WireFormat.GetTagFieldNumber(field))
                {
                    case 1: piece.Piece = entry.ReadString(); break;
                    case 2: piece.Score = entry.ReadFloat(); break;
                    case 3: piece.Type = entry.ReadEnum(); break;
                    default: entry.SkipLastField(); break;
                }
            }
            pieces.Add(piece);
        }
        return pieces;
    }
}
