using System.Globalization;
using System.Text;

namespace MLNetFinetune.ChatTemplates;

/// <summary>
/// Python's str operations as chat templates use them. Python counts, indexes and slices strings by code point
/// (C# by UTF-16 unit) and has its own whitespace set, so these differ from the obvious .NET calls exactly where
/// content has emoji or unusual spaces.
/// </summary>
static class PyStrings
{
    /// <summary>Python's <c>str.isspace</c> for one character: .NET's whitespace plus the four separators \x1c–\x1f.</summary>
    public static bool IsSpace(char c) => char.IsWhiteSpace(c) || c is >= '\x1c' and <= '\x1f';

    /// <summary>The code points of a string, each as a string (Python's iteration, indexing and length).</summary>
    public static IReadOnlyList<object?> CodePoints(string s)
    {
        var points = new List<object?>(s.Length);
        for (int i = 0; i < s.Length; i++)
        {
            int width = char.IsHighSurrogate(s[i]) && i + 1 < s.Length && char.IsLowSurrogate(s[i + 1]) ? 2 : 1;
            points.Add(s.Substring(i, width));
            i += width - 1;
        }
        return points;
    }

    /// <summary>Python's string ordering: by code point (ordinal UTF-16 order differs above U+D7FF).</summary>
    public static int CompareCodePoints(string a, string b)
    {
        var x = a.EnumerateRunes().GetEnumerator();
        var y = b.EnumerateRunes().GetEnumerator();
        while (true)
        {
            bool moreX = x.MoveNext(), moreY = y.MoveNext();
            if (!moreX || !moreY) return moreX.CompareTo(moreY);
            int c = x.Current.Value.CompareTo(y.Current.Value);
            if (c != 0) return c;
        }
    }

    public static readonly IComparer<string> CodePointOrder = Comparer<string>.Create(CompareCodePoints);

    /// <summary>Python's <c>str.strip/lstrip/rstrip(chars)</c>: whitespace when <paramref name="chars"/> is null.</summary>
    public static string Strip(string s, string? chars, bool left, bool right)
    {
        bool Strippable(char c) => chars == null ? IsSpace(c) : chars.Contains(c);
        int start = 0, end = s.Length;
        if (left) while (start < end && Strippable(s[start])) start++;
        if (right) while (end > start && Strippable(s[end - 1])) end--;
        return s[start..end];
    }

    /// <summary>Python's <c>str.split(sep, maxsplit)</c>: runs of whitespace when <paramref name="separator"/> is null.</summary>
    public static List<object?> Split(string s, string? separator, long maxSplit)
    {
        var parts = new List<object?>();
        if (separator == null)
        {
            int i = 0;
            while (true)
            {
                while (i < s.Length && IsSpace(s[i])) i++;
                if (i == s.Length) break;
                if (maxSplit >= 0 && parts.Count == maxSplit)
                {
                    parts.Add(s[i..]);   // the rest, trailing whitespace included, as CPython does
                    break;
                }
                int start = i;
                while (i < s.Length && !IsSpace(s[i])) i++;
                parts.Add(s[start..i]);
            }
            return parts;
        }
        if (separator.Length == 0) throw new TemplateRuntimeException("empty separator");
        int from = 0;
        while (maxSplit < 0 || parts.Count < maxSplit)
        {
            int at = s.IndexOf(separator, from, StringComparison.Ordinal);
            if (at < 0) break;
            parts.Add(s[from..at]);
            from = at + separator.Length;
        }
        parts.Add(s[from..]);
        return parts;
    }

    /// <summary>Python's <c>str.replace(old, new, count)</c>, including an empty <paramref name="old"/>.</summary>
    public static string Replace(string s, string old, string replacement, long count)
    {
        var sb = new StringBuilder();
        int from = 0;
        for (long done = 0; count < 0 || done < count; done++)
        {
            if (old.Length == 0)
            {
                // Python inserts the replacement before every code point and at the end.
                sb.Append(replacement);
                if (from == s.Length) { from = s.Length + 1; break; }
                int width = char.IsHighSurrogate(s[from]) && from + 1 < s.Length ? 2 : 1;
                sb.Append(s, from, width);
                from += width;
                continue;
            }
            int at = s.IndexOf(old, from, StringComparison.Ordinal);
            if (at < 0) break;
            sb.Append(s, from, at - from).Append(replacement);
            from = at + old.Length;
        }
        if (from <= s.Length) sb.Append(s, from, s.Length - from);
        return sb.ToString();
    }

    /// <summary>Python's <c>str.title()</c>: upper case after an uncased character, lower case after a cased one.</summary>
    public static string Title(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousCased = false;
        foreach (char c in s)
        {
            sb.Append(previousCased ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousCased = char.IsUpper(c) || char.IsLower(c) || char.GetUnicodeCategory(c) == UnicodeCategory.TitlecaseLetter;
        }
        return sb.ToString();
    }

    /// <summary>Python's <c>repr(str)</c>: single quotes unless the text has one and no double quote; escapes.</summary>
    public static string Repr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(quote);
        foreach (var rune in s.EnumerateRunes())
        {
            int c = rune.Value;
            if (c == quote || c == '\\') sb.Append('\\').Append((char)c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (c < 0x20 || c == 0x7f) sb.Append($"\\x{c:x2}");
            else if (c < 0x7f || IsPrintable(rune)) sb.Append(rune.ToString());
            else sb.Append(c <= 0xff ? $"\\x{c:x2}" : c <= 0xffff ? $"\\u{c:x4}" : $"\\U{c:x8}");
        }
        return sb.Append(quote).ToString();
    }

    // Python's str.isprintable for one code point: not a control, format, surrogate, private-use, unassigned or
    // separator character (the space excepted).
    static bool IsPrintable(Rune rune) => Rune.GetUnicodeCategory(rune) switch
    {
        UnicodeCategory.Control or UnicodeCategory.Format or UnicodeCategory.Surrogate or UnicodeCategory.PrivateUse
            or UnicodeCategory.OtherNotAssigned or UnicodeCategory.LineSeparator or UnicodeCategory.ParagraphSeparator => false,
        UnicodeCategory.SpaceSeparator => rune.Value == ' ',
        _ => true,
    };

    /// <summary>A JSON string as Python's json.dumps writes it (lower-case \u escapes; non-ASCII kept unless asked).</summary>
    public static void JsonQuote(StringBuilder sb, string s, bool ensureAscii)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20 || (ensureAscii && c > 0x7e)) sb.Append($"\\u{(int)c:x4}");
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
