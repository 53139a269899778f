using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// Splits text as Hugging Face's byte-level pre-tokenizers do: added tokens are cut out whole, then a pattern splits the
/// text between them (GPT-2's, or the <c>Split</c> regex of Llama 3 and Qwen2), each match a piece and any text between
/// matches a piece too. Microsoft.ML.Tokenizers' <see cref="RegexPreTokenizer"/> does the rest the same way, but a .NET
/// regex reads UTF-16 code units where Hugging Face's reads code points: a character beyond the BMP (an emoji, 𝐀) is two
/// surrogates to it, neither letter nor symbol, so Llama 3's <c>[^\r\n\p{L}\p{N}]?\p{L}+</c> would cut "👋hi" in two where
/// Hugging Face keeps it whole. Here the pattern reads such a character as one BMP character of the same Unicode category,
/// and the pieces are mapped back onto the text.
/// </summary>
internal sealed class PatternPreTokenizer : PreTokenizer
{
    readonly Regex _pattern;
    readonly Regex? _addedTokens;

    public PatternPreTokenizer(Regex pattern, IReadOnlyDictionary<string, int> addedTokens)
    {
        _pattern = pattern;
        // Longest first: an alternation takes its first alternative that matches, Hugging Face the longest token.
        if (addedTokens.Count > 0)
            _addedTokens = new Regex(string.Join("|", addedTokens.Keys.OrderByDescending(t => t.Length).Select(Regex.Escape)), RegexOptions.Compiled);
    }

    public override IEnumerable<(int Offset, int Length)> PreTokenize(ReadOnlySpan<char> text) => PreTokenize(text.ToString());

    public override IEnumerable<(int Offset, int Length)> PreTokenize(string text)
    {
        var pieces = new List<(int, int)>();
        int start = 0;
        if (_addedTokens != null)
        {
            foreach (Match token in _addedTokens.Matches(text))
            {
                Split(text.AsSpan(start, token.Index - start), start, pieces);
                pieces.Add((token.Index, token.Length));
                start = token.Index + token.Length;
            }
        }
        Split(text.AsSpan(start), start, pieces);
        return pieces;
    }

    // Splits one stretch between added tokens; the pattern sees its end as the end of the text, as Hugging Face's does.
    void Split(ReadOnlySpan<char> text, int offset, List<(int, int)> pieces)
    {
        if (text.IndexOfAnyInRange('\uD800', '\uDFFF') < 0)
        {
            AddMatches(text, i => offset + i, pieces);
            return;
        }
        // One char per code point; starts[i] is where char i came from in the text.
        var chars = new char[text.Length];
        var starts = new int[text.Length + 1];
        int n = 0;
        for (int i = 0; i < text.Length; i++, n++)
        {
            starts[n] = offset + i;
            if (i + 1 < text.Length && char.IsSurrogatePair(text[i], text[i + 1]))
            {
                chars[n] = StandIn[(int)CharUnicodeInfo.GetUnicodeCategory(char.ConvertToUtf32(text[i], text[i + 1]))];
                i++;
            }
            else
            {
                chars[n] = text[i];
            }
        }
        starts[n] = offset + text.Length;
        AddMatches(chars.AsSpan(0, n), i => starts[i], pieces);
    }

    // Matches become pieces, and so does text no match covers (Hugging Face's "Isolated" split); empty matches are dropped.
    void AddMatches(ReadOnlySpan<char> text, Func<int, int> offsetOf, List<(int, int)> pieces)
    {
        int end = 0;
        foreach (var match in _pattern.EnumerateMatches(text))
        {
            if (match.Length == 0) continue;
            if (match.Index > end) pieces.Add((offsetOf(end), offsetOf(match.Index) - offsetOf(end)));
            pieces.Add((offsetOf(match.Index), offsetOf(match.Index + match.Length) - offsetOf(match.Index)));
            end = match.Index + match.Length;
        }
        if (end < text.Length) pieces.Add((offsetOf(end), offsetOf(text.Length) - offsetOf(end)));
    }

    // For each Unicode category, a BMP character of it (the last one): category classes such as \p{L}, \p{N} and \s
    // (whose characters are all in the BMP) treat it as they treat any character beyond the BMP of that category.
    static readonly char[] StandIn = BuildStandIns();

    static char[] BuildStandIns()
    {
        var table = new char[Enum.GetValues<UnicodeCategory>().Length];
        for (int c = 0xFFFF; c >= 0; c--)
        {
            if (char.IsSurrogate((char)c)) continue;
            var category = CharUnicodeInfo.GetUnicodeCategory((char)c);
            if (table[(int)category] == '\0') table[(int)category] = (char)c;
        }
        return table;
    }
}
