using System.Globalization;
using System.Text;

namespace MLNetFinetune.ChatTemplates;

/// <summary>
/// Splits a template into text and tag tokens the way Jinja2's lexer does with transformers' settings. The whitespace
/// rules decide the bytes of every prompt, so they follow Jinja2 exactly:
/// <list type="bullet">
/// <item><c>{%-</c>, <c>{{-</c>, <c>{#-</c> strip all whitespace before the tag; <c>-%}</c>, <c>-}}</c>, <c>-#}</c> all after it.</item>
/// <item>trim_blocks: a block or comment tag swallows the one newline right after it (<c>+%}</c> keeps it).</item>
/// <item>lstrip_blocks: spaces and tabs between a line start and a block or comment tag are dropped (<c>{%+</c>
/// keeps them); "line start" includes the template start and the point right after a tag that ended with a newline.</item>
/// </list>
/// The caller has already made every newline "\n" and dropped one trailing newline, as Jinja2 does before lexing.
/// </summary>
sealed class TemplateLexer
{
    static readonly string[] Operators = ["//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%", "~", "[", "]", "(", ")",
        "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"];

    readonly string _source;
    readonly string _origin;
    readonly List<int> _lineStarts = [0];
    readonly List<Token> _tokens = [];

    TemplateLexer(string source, string origin)
    {
        _source = source;
        _origin = origin;
        for (int i = 0; i < source.Length; i++)
            if (source[i] == '\n') _lineStarts.Add(i + 1);
    }

    public static List<Token> Tokenize(string source, string origin) => new TemplateLexer(source, origin).Run();

    Position At(int offset)
    {
        int line = _lineStarts.BinarySearch(offset);
        if (line < 0) line = ~line - 1;
        return new Position(line + 1, offset - _lineStarts[line] + 1);
    }

    ChatTemplateException Error(int offset, string problem) => ChatTemplateException.At(_origin, At(offset), problem);

    bool Has(int offset, string text) => string.CompareOrdinal(_source, offset, text, 0, text.Length) == 0;

    int SkipSpace(int offset)
    {
        while (offset < _source.Length && PyStrings.IsSpace(_source[offset])) offset++;
        return offset;
    }

    List<Token> Run()
    {
        int pos = 0;
        bool lineStarting = true;
        while (pos < _source.Length)
        {
            int start = NextTag(pos);
            if (start < 0)
            {
                _tokens.Add(new Token(TokenKind.Text, _source[pos..], At(pos)));
                break;
            }
            char kind = _source[start + 1];
            char sign = start + 2 < _source.Length && _source[start + 2] is '-' or '+' ? _source[start + 2] : '\0';
            string text = _source[pos..start];
            if (sign == '-') text = PyStrings.Strip(text, null, left: false, right: true);
            else if (sign != '+' && kind != '{')
            {
                // lstrip_blocks: only when nothing but whitespace stands between the line start and the tag.
                int lineStart = text.LastIndexOf('\n') + 1;
                if ((lineStart > 0 || lineStarting) && lineStart < text.Length && text.Skip(lineStart).All(PyStrings.IsSpace))
                    text = text[..lineStart];
            }
            if (text.Length > 0) _tokens.Add(new Token(TokenKind.Text, text, At(pos)));
            int inside = start + (sign == '\0' ? 2 : 3);
            pos = kind == '#' ? SkipComment(start, inside) : LexTag(start, inside, block: kind == '%');
            lineStarting = _source[pos - 1] == '\n';
        }
        _tokens.Add(new Token(TokenKind.End, "", At(_source.Length)));
        return _tokens;
    }

    int NextTag(int from)
    {
        for (int i = _source.IndexOf('{', from); i >= 0 && i + 1 < _source.Length; i = _source.IndexOf('{', i + 1))
            if (_source[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    // The end of a tag or comment: "-" strips the whitespace after it, "+" keeps it, plain block and comment ends
    // swallow one newline (trim_blocks).
    int AfterEnd(int end, int delimiterLength, char sign, bool trimNewline)
    {
        int after = end + delimiterLength;
        if (sign == '-') return SkipSpace(after);
        if (sign == '\0' && trimNewline && after < _source.Length && _source[after] == '\n') return after + 1;
        return after;
    }

    int SkipComment(int start, int inside)
    {
        for (int i = inside; i + 1 < _source.Length; i++)
        {
            if ((_source[i] is '-' or '+') && Has(i + 1, "#}")) return AfterEnd(i, 3, _source[i], trimNewline: true);
            if (Has(i, "#}")) return AfterEnd(i, 2, '\0', trimNewline: true);
        }
        throw Error(start, "the comment is never closed (missing '#}')");
    }

    int LexTag(int start, int pos, bool block)
    {
        _tokens.Add(new Token(block ? TokenKind.BlockBegin : TokenKind.VariableBegin, block ? "{%" : "{{", At(start)));
        if (block && RawBlock(pos) is int raw) throw Error(raw, "raw blocks are not supported");
        var brackets = new Stack<(char Close, int At)>();
        while (true)
        {
            if (pos >= _source.Length)
                throw brackets.Count > 0 ? Error(brackets.Peek().At, $"'{_source[brackets.Peek().At]}' is never closed")
                    : Error(start, block ? "'{%' is never closed (missing '%}')" : "'{{' is never closed (missing '}}')");
            // The end delimiter counts only outside brackets, so "{{ {'a': {'b': 1}} }}" reads as a dict.
            if (brackets.Count == 0)
            {
                string end = block ? "%}" : "}}";
                char sign = _source[pos] is '-' || (block && _source[pos] == '+') ? _source[pos] : '\0';
                if (Has(pos + (sign == '\0' ? 0 : 1), end))
                {
                    _tokens.Add(new Token(block ? TokenKind.BlockEnd : TokenKind.VariableEnd, end, At(pos)));
                    return AfterEnd(pos, sign == '\0' ? 2 : 3, sign, trimNewline: block);
                }
            }
            char c = _source[pos];
            if (PyStrings.IsSpace(c)) pos++;
            else if (char.IsAsciiDigit(c)) pos = LexNumber(pos);
            else if (char.IsLetter(c) || c == '_')
            {
                int begin = pos;
                while (pos < _source.Length && (char.IsLetterOrDigit(_source[pos]) || _source[pos] == '_')) pos++;
                _tokens.Add(new Token(TokenKind.Name, _source[begin..pos], At(begin)));
            }
            else if (c is '\'' or '"') pos = LexString(pos);
            else
            {
                string op = Operators.FirstOrDefault(o => Has(pos, o)) ?? throw Error(pos, $"unexpected character '{c}'");
                if (op is "(" or "[" or "{") brackets.Push((op switch { "(" => ')', "[" => ']', _ => '}' }, pos));
                else if (op is ")" or "]" or "}")
                {
                    if (brackets.Count == 0) throw Error(pos, $"unexpected '{op}'");
                    if (brackets.Peek().Close != op[0]) throw Error(pos, $"unexpected '{op}', expected '{brackets.Peek().Close}'");
                    brackets.Pop();
                }
                _tokens.Add(new Token(TokenKind.Operator, op, At(pos)));
                pos += op.Length;
            }
        }
    }

    // "{% raw %}" would need the body left unlexed; no chat template we know of uses it, so it is refused by name.
    int? RawBlock(int pos)
    {
        pos = SkipSpace(pos);
        return Has(pos, "raw") && (pos + 3 == _source.Length || !(char.IsLetterOrDigit(_source[pos + 3]) || _source[pos + 3] == '_')) ? pos : null;
    }

    // Jinja2's numbers: 12, 1_000, 1.5, 1e5, 1.5e-3. Digits right after a dot stay an integer, so "messages.0" is an item.
    int LexNumber(int pos)
    {
        int begin = pos;
        int Digits(int p)
        {
            while (p < _source.Length && (char.IsAsciiDigit(_source[p]) || (_source[p] == '_' && p + 1 < _source.Length && char.IsAsciiDigit(_source[p + 1])))) p++;
            return p;
        }
        bool Digit(int p) => p < _source.Length && char.IsAsciiDigit(_source[p]);
        pos = Digits(pos);
        bool isFloat = false;
        if (begin == 0 || _source[begin - 1] != '.')
        {
            if (pos < _source.Length && _source[pos] == '.' && Digit(pos + 1)) (pos, isFloat) = (Digits(pos + 1), true);
            if (pos < _source.Length && _source[pos] is 'e' or 'E')
            {
                int exponent = pos + 1 < _source.Length && _source[pos + 1] is '+' or '-' ? pos + 2 : pos + 1;
                if (Digit(exponent)) (pos, isFloat) = (Digits(exponent), true);
            }
        }
        string text = _source[begin..pos];
        string digits = text.Replace("_", "");
        if (isFloat)
            _tokens.Add(new Token(TokenKind.Float, text, At(begin), double.Parse(digits, NumberStyles.Float, CultureInfo.InvariantCulture)));
        else
            _tokens.Add(new Token(TokenKind.Integer, text, At(begin),
                long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long value) ? value : throw Error(begin, $"the integer {text} is too large")));
        return pos;
    }

    // A quoted string with Python's escapes (Jinja2 decodes string literals with Python's unicode-escape codec).
    int LexString(int pos)
    {
        int begin = pos;
        char quote = _source[pos++];
        var sb = new StringBuilder();
        while (true)
        {
            if (pos >= _source.Length) throw Error(begin, "the string is never closed");
            char c = _source[pos++];
            if (c == quote) break;
            if (c != '\\') { sb.Append(c); continue; }
            if (pos >= _source.Length) throw Error(begin, "the string is never closed");
            char e = _source[pos++];
            int HexEscape(int length)
            {
                if (pos + length > _source.Length || !int.TryParse(_source.AsSpan(pos, length), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int code)
                    || _source.AsSpan(pos, length).ContainsAny("+- "))
                    throw Error(pos - 2, $"truncated \\{e} escape (it needs {length} hex digits)");
                pos += length;
                return code;
            }
            switch (e)
            {
                case '\n': break;   // a backslash before a newline continues the line
                case '\\' or '\'' or '"': sb.Append(e); break;
                case 'a': sb.Append('\a'); break;
                case 'b': sb.Append('\b'); break;
                case 'f': sb.Append('\f'); break;
                case 'n': sb.Append('\n'); break;
                case 'r': sb.Append('\r'); break;
                case 't': sb.Append('\t'); break;
                case 'v': sb.Append('\v'); break;
                case >= '0' and <= '7':
                    int octal = e - '0';
                    for (int n = 0; n < 2 && pos < _source.Length && _source[pos] is >= '0' and <= '7'; n++) octal = octal * 8 + (_source[pos++] - '0');
                    sb.Append((char)octal);
                    break;
                case 'x': sb.Append((char)HexEscape(2)); break;
                case 'u': sb.Append((char)HexEscape(4)); break;
                case 'U':
                    int point = HexEscape(8);
                    if (point > 0x10FFFF) throw Error(pos - 10, "\\U escape beyond U+10FFFF");
                    sb.Append(char.ConvertFromUtf32(point));
                    break;
                case 'N': throw Error(pos - 2, "\\N{...} escapes are not supported");
                default: sb.Append('\\').Append(e); break;   // Python keeps unknown escapes as they are
            }
        }
        _tokens.Add(new Token(TokenKind.String, _source[begin..pos], At(begin), sb.ToString()));
        return pos;
    }
}
