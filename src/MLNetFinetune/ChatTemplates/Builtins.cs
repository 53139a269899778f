using System.Globalization;
using System.Text;

namespace MLNetFinetune.ChatTemplates;

/// <summary>
/// A filter, test, method or global function: its Python parameters after the value (or receiver), how many of them are
/// required, and what it does. The parser checks names and arguments against these at Parse, so a template that uses
/// anything else is refused before it renders anything.
/// </summary>
sealed record Builtin(string Kind, string Name, string[] Parameters, int Required, Func<object?, object?[], object?> Apply)
{
    /// <summary>An optional argument the template did not give (None is a value a template can give).</summary>
    public static readonly object Missing = new();

    /// <summary>Why these arguments do not fit, or null when they do.</summary>
    public string? Check(int positional, IReadOnlyList<string> keywords)
    {
        string what = $"{Kind} '{Name}'";
        if (positional > Parameters.Length)
            return $"{what} takes at most {Parameters.Length} argument{(Parameters.Length == 1 ? "" : "s")} ({positional} given)";
        for (int i = 0; i < keywords.Count; i++)
        {
            int at = Array.IndexOf(Parameters, keywords[i]);
            if (at < 0) return $"{what} has no argument '{keywords[i]}'";
            if (at < positional || keywords.Take(i).Contains(keywords[i])) return $"{what} got argument '{keywords[i]}' twice";
        }
        for (int i = positional; i < Required; i++)
            if (!keywords.Contains(Parameters[i])) return $"{what} needs argument '{Parameters[i]}'";
        return null;
    }

    /// <summary>The arguments in parameter order, <see cref="Missing"/> where not given (Check has passed at Parse).</summary>
    public object?[] Bind(IReadOnlyList<object?> positional, IReadOnlyList<KeyValuePair<string, object?>> keywords)
    {
        var bound = Enumerable.Repeat(Missing, Parameters.Length).ToArray<object?>();
        for (int i = 0; i < positional.Count; i++) bound[i] = positional[i];
        foreach (var (name, value) in keywords) bound[Array.IndexOf(Parameters, name)] = value;
        return bound;
    }
}

static class Builtins
{
    static object? Arg(object?[] args, int i, object? whenMissing) => args[i] == Builtin.Missing ? whenMissing : args[i];

    static string? OptionalString(object?[] args, int i, string what) => Arg(args, i, null) switch
    {
        null => null,
        string s => s,
        var v => throw Py.TypeError($"{what} must be a string or None, not '{Py.TypeName(v)}'"),
    };

    static string String(object? v, string what) => v as string ?? throw Py.TypeError($"{what} must be a string, not '{Py.TypeName(v)}'");

    static long Integer(object? v, string what) => v is bool or long ? Py.ToLong(v) : throw Py.TypeError($"{what} must be an integer, not '{Py.TypeName(v)}'");

    static Builtin Filter(string name, string[] parameters, int required, Func<object?, object?[], object?> apply) => new("filter", name, parameters, required, apply);
    static Builtin Test(string name, string[] parameters, Func<object?, object?[], bool> apply) => new("test", name, parameters, parameters.Length, (v, a) => apply(v, a));
    static Builtin Method(string name, string[] parameters, int required, Func<object?, object?[], object?> apply) => new("method", name, parameters, required, apply);

    /// <summary>Jinja2's filters that chat templates use, with transformers' tojson.</summary>
    public static readonly IReadOnlyDictionary<string, Builtin> Filters = new[]
    {
        Filter("trim", ["chars"], 0, (v, a) => PyStrings.Strip(Py.Str(v), OptionalString(a, 0, "trim's chars"), left: true, right: true)),
        Filter("length", [], 0, (v, _) => Py.Length(v)),
        Filter("count", [], 0, (v, _) => Py.Length(v)),
        Filter("tojson", ["ensure_ascii", "indent", "separators", "sort_keys"], 0, ToJson),
        Filter("upper", [], 0, (v, _) => Py.Str(v).ToUpperInvariant()),
        Filter("lower", [], 0, (v, _) => Py.Str(v).ToLowerInvariant()),
        Filter("default", ["default_value", "boolean"], 0, Default),
        Filter("d", ["default_value", "boolean"], 0, Default),
        Filter("join", ["d"], 0, (v, a) => string.Join(Py.Str(Arg(a, 0, "")), Py.Iterate(v).Select(Py.Str))),
        Filter("first", [], 0, (v, _) => Py.Iterate(v) is { Count: > 0 } items ? items[0] : Undefined.Because("No first item, sequence was empty.")),
        Filter("last", [], 0, (v, _) => Py.Iterate(v) is { Count: > 0 } items ? items[^1] : Undefined.Because("No last item, sequence was empty.")),
        Filter("string", [], 0, (v, _) => Py.Str(v)),
        Filter("int", ["default", "base"], 0, (v, a) => ToInt(v, Arg(a, 0, 0L), Integer(Arg(a, 1, 10L), "int's base"))),
        Filter("float", ["default"], 0, (v, a) => ToFloat(v) ?? Arg(a, 0, 0.0)),
        Filter("list", [], 0, (v, _) => Py.Iterate(v).ToList()),
        Filter("items", [], 0, (v, _) => v switch
        {
            Undefined => new List<object?>(),
            OrderedDictionary<string, object?> dict => dict.Select(p => (object?)new object?[] { p.Key, p.Value }).ToList(),
            _ => throw Py.TypeError("Can only get item pairs from a mapping."),
        }),
        Filter("replace", ["old", "new", "count"], 2, (v, a) =>
            PyStrings.Replace(Py.Str(v), Py.Str(a[0]), Py.Str(a[1]), Arg(a, 2, null) is { } count ? Integer(count, "replace's count") : -1)),
    }.ToDictionary(b => b.Name);

    static object? Default(object? v, object?[] a) =>
        v is Undefined || (Py.Truthy(Arg(a, 1, false)) && !Py.Truthy(v)) ? Arg(a, 0, "") : v;

    // transformers replaces Jinja2's tojson (which escapes HTML characters) with json.dumps(ensure_ascii=False, ...).
    static object? ToJson(object? v, object?[] a)
    {
        string? indent = Arg(a, 1, null) switch
        {
            null => null,
            string s => s,
            bool or long => new string(' ', (int)Math.Max(0, Py.ToLong(a[1]))),
            var other => throw Py.TypeError($"tojson's indent must be an integer or a string, not '{Py.TypeName(other)}'"),
        };
        var (itemSeparator, keySeparator) = Arg(a, 2, null) switch
        {
            null => (indent == null ? ", " : ",", ": "),
            IReadOnlyList<object?> { Count: 2 } pair => (String(pair[0], "tojson's separators"), String(pair[1], "tojson's separators")),
            _ => throw Py.TypeError("tojson's separators must be a pair of strings, such as (',', ':')"),
        };
        return Py.ToJson(v, Py.Truthy(Arg(a, 0, false)), indent, itemSeparator, keySeparator, Py.Truthy(Arg(a, 3, false)));
    }

    // Jinja2's int filter: int(value), else int(float(value)) so that "42.23"|int is 42, else the default.
    static object? ToInt(object? v, object? whenInvalid, long numberBase)
    {
        if (v is Undefined u) throw u.Fail();
        if (v is bool or long) return Py.ToLong(v);
        if (v is string s && ParseInt(s, numberBase) is { } parsed) return parsed;
        double? d = ToFloat(v);
        return d is { } x && !double.IsNaN(x) && !double.IsInfinity(x) && Math.Abs(x) < 9.2e18 ? (long)Math.Truncate(x) : whenInvalid;
    }

    // Python's int(text, base): surrounding whitespace, a sign, single underscores between digits, a 0x/0o/0b prefix.
    static long? ParseInt(string text, long numberBase)
    {
        string s = PyStrings.Strip(text, null, left: true, right: true);
        bool negative = s.StartsWith('-');
        if (s.StartsWith('-') || s.StartsWith('+')) s = s[1..];
        string prefix = numberBase switch { 16 => "0x", 8 => "0o", 2 => "0b", _ => "" };
        if (prefix.Length > 0 && s.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            s = s[2..].StartsWith('_') ? s[3..] : s[2..];   // one underscore may follow the prefix: 0x_1f
        if (s.Length == 0 || s.StartsWith('_') || s.EndsWith('_') || s.Contains("__")) return null;
        long value = 0;
        try
        {
            foreach (char c in s.Replace("_", ""))
            {
                int digit = char.IsAsciiDigit(c) ? c - '0' : char.IsAsciiLetter(c) ? char.ToLowerInvariant(c) - 'a' + 10 : 99;
                if (digit >= numberBase) return null;
                value = checked(value * numberBase + digit);
            }
        }
        catch (OverflowException)
        {
            return null;
        }
        return negative ? -value : value;
    }

    // Python's float(value), or null where it raises TypeError/ValueError (the float filter then gives its default).
    static double? ToFloat(object? v)
    {
        switch (v)
        {
            case Undefined u: throw u.Fail();
            case bool or long or double: return Py.ToDouble(v);
            case string s:
                string t = PyStrings.Strip(s, null, left: true, right: true).ToLowerInvariant();
                if (t.TrimStart('+', '-') is "inf" or "infinity" or "nan")
                    return t.TrimStart('+', '-') == "nan" ? double.NaN : t.StartsWith('-') ? double.NegativeInfinity : double.PositiveInfinity;
                if (t.Length == 0 || t.StartsWith('_') || t.EndsWith('_') || t.Contains("__") || t.Contains("_.") || t.Contains("._")) return null;
                return double.TryParse(t.Replace("_", ""), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : null;
            default: return null;
        }
    }

    /// <summary>Jinja2's tests (<c>x is defined</c>, <c>x is string</c>, ...).</summary>
    public static readonly IReadOnlyDictionary<string, Builtin> Tests = new[]
    {
        Test("defined", [], (v, _) => v is not Undefined),
        Test("undefined", [], (v, _) => v is Undefined),
        Test("none", [], (v, _) => v is null),
        Test("string", [], (v, _) => v is string),
        Test("number", [], (v, _) => Py.IsNumber(v)),
        Test("integer", [], (v, _) => v is long),
        Test("float", [], (v, _) => v is double),
        Test("boolean", [], (v, _) => v is bool),
        Test("true", [], (v, _) => v is true),
        Test("false", [], (v, _) => v is false),
        Test("mapping", [], (v, _) => v is OrderedDictionary<string, object?>),
        // Jinja2 asks for len() and __getitem__, which Undefined has; iter(), which Undefined and loop have.
        Test("sequence", [], (v, _) => v is string or IReadOnlyList<object?> or OrderedDictionary<string, object?> or Undefined),
        Test("iterable", [], (v, _) => v is string or IReadOnlyList<object?> or OrderedDictionary<string, object?> or DictView or Undefined or LoopInfo),
        Test("odd", [], (v, _) => Py.Equal(Py.Arithmetic("%", v, 2L), 1L)),
        Test("even", [], (v, _) => Py.Equal(Py.Arithmetic("%", v, 2L), 0L)),
        Test("divisibleby", ["num"], (v, a) => Py.Equal(Py.Arithmetic("%", v, a[0]), 0L)),
        Test("eq", ["other"], (v, a) => Py.Equal(v, a[0])),
        Test("equalto", ["other"], (v, a) => Py.Equal(v, a[0])),
        Test("ne", ["other"], (v, a) => !Py.Equal(v, a[0])),
        Test("in", ["seq"], (v, a) => Py.Contains(a[0], v)),
    }.ToDictionary(b => b.Name);

    // The methods of str and dict that chat templates call; mutating ones (list.append, dict.update) are what
    // transformers' ImmutableSandboxedEnvironment forbids, so they are absent here too.
    static readonly IReadOnlyDictionary<string, Builtin> StringMethods = new[]
    {
        Method("strip", ["chars"], 0, (s, a) => PyStrings.Strip((string)s!, OptionalString(a, 0, "strip's chars"), left: true, right: true)),
        Method("lstrip", ["chars"], 0, (s, a) => PyStrings.Strip((string)s!, OptionalString(a, 0, "lstrip's chars"), left: true, right: false)),
        Method("rstrip", ["chars"], 0, (s, a) => PyStrings.Strip((string)s!, OptionalString(a, 0, "rstrip's chars"), left: false, right: true)),
        Method("startswith", ["prefix"], 1, (s, a) => Affixes(a[0], "startswith").Any(p => ((string)s!).StartsWith(p, StringComparison.Ordinal))),
        Method("endswith", ["suffix"], 1, (s, a) => Affixes(a[0], "endswith").Any(p => ((string)s!).EndsWith(p, StringComparison.Ordinal))),
        Method("split", ["sep", "maxsplit"], 0, (s, a) => PyStrings.Split((string)s!, OptionalString(a, 0, "split's sep"), Integer(Arg(a, 1, -1L), "split's maxsplit"))),
        Method("upper", [], 0, (s, _) => ((string)s!).ToUpperInvariant()),
        Method("lower", [], 0, (s, _) => ((string)s!).ToLowerInvariant()),
        Method("title", [], 0, (s, _) => PyStrings.Title((string)s!)),
        Method("replace", ["old", "new", "count"], 2, (s, a) =>
            PyStrings.Replace((string)s!, String(a[0], "replace's old"), String(a[1], "replace's new"), Integer(Arg(a, 2, -1L), "replace's count"))),
    }.ToDictionary(b => b.Name);

    static IEnumerable<string> Affixes(object? v, string method) => v switch
    {
        string s => [s],
        object?[] tuple when tuple.All(x => x is string) => tuple.Cast<string>(),
        _ => throw Py.TypeError($"{method} first arg must be str or a tuple of str, not {Py.TypeName(v)}"),
    };

    static readonly IReadOnlyDictionary<string, Builtin> DictMethods = new[]
    {
        Method("items", [], 0, (d, _) => new DictView("dict_items", ((OrderedDictionary<string, object?>)d!).Select(p => (object?)new object?[] { p.Key, p.Value }).ToList())),
        Method("keys", [], 0, (d, _) => new DictView("dict_keys", ((OrderedDictionary<string, object?>)d!).Keys.ToList<object?>())),
        Method("values", [], 0, (d, _) => new DictView("dict_values", ((OrderedDictionary<string, object?>)d!).Values.ToList())),
        Method("get", ["key", "default"], 1, (d, a) =>
            a[0] is string key && ((OrderedDictionary<string, object?>)d!).TryGetValue(key, out var value) ? value : Arg(a, 1, null)),
    }.ToDictionary(b => b.Name);

    /// <summary>Every method a template may call, for the check at Parse (the receiver's type is known only at Render).</summary>
    public static readonly IReadOnlyDictionary<string, Builtin> MethodsByName = StringMethods.Concat(DictMethods).ToDictionary();

    /// <summary>The method of that name on this value, or null.</summary>
    public static Builtin? Method(object receiver, string name) => receiver switch
    {
        string => StringMethods.GetValueOrDefault(name),
        OrderedDictionary<string, object?> => DictMethods.GetValueOrDefault(name),
        _ => null,
    };

    /// <summary>The globals transformers adds (raise_exception, strftime_now) and Jinja2's range; namespace is syntax here.</summary>
    public static readonly IReadOnlyDictionary<string, Builtin> Functions = new[]
    {
        new Builtin("function", "raise_exception", ["message"], 1, (_, a) => throw new TemplateRuntimeException(Py.Str(a[0]))),
        new Builtin("function", "strftime_now", ["format"], 1, (_, a) => Strftime(DateTime.Now, String(a[0], "strftime_now's format"))),
        new Builtin("function", "range", ["start", "stop", "step"], 1, (_, a) => Range(a)),
    }.ToDictionary(b => b.Name);

    static List<object?> Range(object?[] a)
    {
        // range(stop) or range(start, stop[, step]); Jinja2's sandbox refuses more than 100,000 items.
        bool one = a[1] == Builtin.Missing;
        long start = one ? 0 : Integer(a[0], "range's start"), stop = Integer(one ? a[0] : a[1], "range's stop"), step = Integer(Arg(a, 2, 1L), "range's step");
        if (step == 0) throw new TemplateRuntimeException("range() arg 3 must not be zero");
        var items = new List<object?>();
        for (long i = start; step > 0 ? i < stop : i > stop; i += step)
        {
            if (items.Count == 100_000) throw new TemplateRuntimeException("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
            items.Add(i);
        }
        return items;
    }

    static readonly string[] Days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
    static readonly string[] Months = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];

    /// <summary>
    /// Python's <c>datetime.strftime</c> in the C locale (glibc), for <c>strftime_now</c> (Llama 3.1 prints today's date
    /// with it). A naive local time, so %Z and %z are empty as in Python. <c>%-d</c> drops the padding, as glibc does.
    /// </summary>
    public static string Strftime(DateTime t, string format)
    {
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
            bool unpadded = format[i + 1] == '-' && i + 2 < format.Length;
            char directive = format[i += unpadded ? 2 : 1];
            string Number(int value, int width) => unpadded ? value.ToString(CultureInfo.InvariantCulture) : value.ToString(new string('0', width), CultureInfo.InvariantCulture);
            int weekday = ((int)t.DayOfWeek + 6) % 7;   // Monday is 0
            sb.Append(directive switch
            {
                'a' => Days[weekday][..3],
                'A' => Days[weekday],
                'b' or 'h' => Months[t.Month - 1][..3],
                'B' => Months[t.Month - 1],
                'd' => Number(t.Day, 2),
                'e' => unpadded ? Number(t.Day, 1) : t.Day.ToString(CultureInfo.InvariantCulture).PadLeft(2),
                'H' => Number(t.Hour, 2),
                'I' => Number((t.Hour + 11) % 12 + 1, 2),
                'j' => Number(t.DayOfYear, 3),
                'm' => Number(t.Month, 2),
                'M' => Number(t.Minute, 2),
                'p' => t.Hour < 12 ? "AM" : "PM",
                'S' => Number(t.Second, 2),
                'y' => Number(t.Year % 100, 2),
                'Y' => t.Year.ToString(CultureInfo.InvariantCulture),
                'u' => (weekday + 1).ToString(CultureInfo.InvariantCulture),
                'w' => ((int)t.DayOfWeek).ToString(CultureInfo.InvariantCulture),
                'Z' or 'z' => "",
                'c' => Strftime(t, "%a %b %e %H:%M:%S %Y"),
                'x' or 'D' => Strftime(t, "%m/%d/%y"),
                'X' or 'T' => Strftime(t, "%H:%M:%S"),
                'F' => Strftime(t, "%Y-%m-%d"),
                'R' => Strftime(t, "%H:%M"),
                'n' => "\n",
                't' => "\t",
                '%' => "%",
                _ => "%" + directive,   // glibc prints a directive it does not know as it is
            });
        }
        return sb.ToString();
    }
}
