using System.Text;
using System.Text.RegularExpressions;

namespace MLNetFinetune.Tokenization;

/// <summary>
/// GPT-2's byte-level conventions, which Hugging Face vocab.json / merges.txt / tokenizer.json files use: every byte
/// is shown as a printable character (space → 'Ġ', newline → 'Ċ', …), and text is split into pieces by a fixed
/// regex before BPE. Microsoft.ML.Tokenizers keeps its copy of the byte table internal, so the 256-entry table is
/// rebuilt here from its definition (printable Latin-1 bytes map to themselves, the rest to U+0100 onwards).
/// </summary>
public static partial class ByteLevel
{
    /// <summary>The character that stands for each byte.</summary>
    public static IReadOnlyList<char> ByteToChar { get; } = BuildTable();

    static readonly Dictionary<char, byte> CharToByte = ByteToChar.Select((c, b) => (c, (byte)b)).ToDictionary(p => p.c, p => p.Item2);

    /// <summary>GPT-2's pre-tokenization pattern: contractions, letters, digits, other symbols, whitespace.</summary>
    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    /// <summary>
    /// GPT-2's pattern after a <c>Digits</c> pre-tokenizer with <c>individual_digits</c> (SmolLM2, StarCoder): every
    /// digit is a piece of its own. Digits cuts the text around each digit before GPT-2's pattern runs, so that pattern
    /// never sees one: <c> ?\p{N}+</c> gives way to <c>\p{N}</c>, and a run of spaces before a digit ends a piece,
    /// which <c>(?![^\s\p{N}])</c> says where GPT-2's <c>(?!\S)</c> would look past the cut.
    /// </summary>
    public const string Gpt2PatternWithSingleDigits = @"\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+";

    /// <summary>The compiled GPT-2 pre-tokenization regex.</summary>
    [GeneratedRegex(Gpt2Pattern)]
    public static partial Regex Gpt2Regex();

    /// <summary>The byte-level string of raw bytes (how vocab.json spells a token).</summary>
    public static string Encode(ReadOnlySpan<byte> bytes)
    {
        var sb = new StringBuilder(bytes.Length);
        foreach (byte b in bytes) sb.Append(ByteToChar[b]);
        return sb.ToString();
    }

    /// <summary>The raw bytes of a byte-level string; false when it holds a character outside the byte table.</summary>
    public static bool TryDecode(string token, out byte[] bytes)
    {
        bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            if (!CharToByte.TryGetValue(token[i], out bytes[i])) return false;
        }
        return true;
    }

    static char[] BuildTable()
    {
        var table = new char[256];
        int next = 256;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            table[b] = printable ? (char)b : (char)next++;
        }
        return table;
    }
}
