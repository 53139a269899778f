using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MLNetFinetune.ChatTemplates;

// Template values are Python's, because Jinja2 evaluates templates with Python semantics and a chat template's text
// depends on them ("{{ 1.0 }}" prints "1.0", "{{ [1] }}" prints "[1]", 1 == True, a missing dict key is undefined):
//   None → null, bool, int → long, float → double, str → string, list → List<object?>, tuple → object?[],
//   dict → OrderedDictionary<string, object?> (insertion-ordered like Python's; JSON keys are strings),
//   and Jinja's own Undefined, Namespace and loop objects, plus bound methods and global functions.

/// <summary>Jinja2's default <c>Undefined</c>: prints as empty, is falsy and iterates as empty; anything else fails.</summary>
sealed class Undefined
{
    readonly string? _hint;
    readonly bool _hasOwner;
    readonly object? _owner;
    readonly object? _key;

    Undefined(string? hint, bool hasOwner, object? owner, object? key) => (_hint, _hasOwner, _owner, _key) = (hint, hasOwner, owner, key);

    public static Undefined Name(string name) => new(null, false, null, name);
    public static Undefined Member(object? owner, object? key) => new(null, true, owner, key);
    public static Undefined Because(string hint) => new(hint, false, null, null);

    /// <summary>Jinja2's wording, so a message reads as it would from transformers.</summary>
    public string Message => _hint
        ?? (!_hasOwner ? $"{Py.Repr(_key)} is undefined"
            : _key is string name ? $"'{Py.ObjectTypeRepr(_owner)}' has no attribute {Py.Repr(name)}"
            : $"{Py.ObjectTypeRepr(_owner)} has no element {Py.Repr(_key)}");

    public TemplateRuntimeException Fail() => new(Message);
}

/// <summary>Jinja2's <c>namespace(...)</c>: the one object a template can change, used to carry state out of loops.</summary>
sealed class Namespace(OrderedDictionary<string, object?> attributes)
{
    public OrderedDictionary<string, object?> Attributes { get; } = attributes;
}

/// <summary>The <c>loop</c> variable of a for loop; one object per loop, advanced on each iteration as in Jinja2.</summary>
sealed class LoopInfo(IReadOnlyList<object?> items)
{
    public int Index0 { get; set; }

    public object? Get(string name) => name switch
    {
        "index" => (long)Index0 + 1,
        "index0" => (long)Index0,
        "revindex" => (long)(items.Count - Index0),
        "revindex0" => (long)(items.Count - Index0 - 1),
        "first" => Index0 == 0,
        "last" => Index0 == items.Count - 1,
        "length" => (long)items.Count,
        "previtem" => Index0 > 0 ? items[Index0 - 1] : Undefined.Because("there is no previous item"),
        "nextitem" => Index0 + 1 < items.Count ? items[Index0 + 1] : Undefined.Because("there is no next item"),
        "depth" => 1L,
        "depth0" => 0L,
        _ => Undefined.Member(this, name),
    };

    public int Length => items.Count;
}

/// <summary>
/// What dict.keys(), values() and items() return: iterable, with a length and <c>in</c>, but not indexable, not JSON,
/// and printed as Python prints it ("dict_keys(['role', 'content'])").
/// </summary>
sealed class DictView(string kind, IReadOnlyList<object?> items)
{
    public string Kind { get; } = kind;
    public IReadOnlyList<object?> Items { get; } = items;
}

/// <summary>A method looked up on a value (<c>content.strip</c>), called by the next postfix <c>(...)</c>.</summary>
sealed record BoundMethod(object Receiver, Builtin Method);

/// <summary>An error while rendering, with Jinja2's or Python's wording; the renderer adds the template position.</summary>
sealed class TemplateRuntimeException(string message) : Exception(message);

/// <summary>Python's behaviour for the operations templates perform on values.</summary>
static class Py
{
    public static TemplateRuntimeException TypeError(string message) => new(message);

    /// <summary>Python's <c>type(v).__name__</c>.</summary>
    public static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        bool => "bool",
        long => "int",
        double => "float",
        string => "str",
        List<object?> => "list",
        object?[] => "tuple",
        OrderedDictionary<string, object?> => "dict",
        DictView view => view.Kind,
        Undefined => "Undefined",
        Namespace => "Namespace",
        LoopInfo => "LoopContext",
        BoundMethod or Builtin => "builtin_function_or_method",
        _ => v.GetType().Name,
    };

    /// <summary>Jinja2's <c>object_type_repr</c>, used in its undefined messages ("list object", "None").</summary>
    public static string ObjectTypeRepr(object? v) => v switch
    {
        null => "None",
        Namespace => "jinja2.utils.Namespace object",
        LoopInfo => "jinja2.runtime.LoopContext object",
        _ => TypeName(v) + " object",
    };

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        IReadOnlyList<object?> list => list.Count > 0,
        OrderedDictionary<string, object?> dict => dict.Count > 0,
        DictView view => view.Items.Count > 0,
        LoopInfo loop => loop.Length > 0,
        _ => true,
    };

    /// <summary>Python's <c>str(v)</c>, which is what <c>{{ v }}</c> prints (Undefined prints as empty).</summary>
    public static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        null => "None",
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => FloatRepr(d),
        Namespace ns => $"<Namespace {Repr(ns.Attributes)}>",
        LoopInfo loop => $"<LoopContext {loop.Index0 + 1}/{loop.Length}>",
        BoundMethod or Builtin => throw new TemplateRuntimeException("a function or method cannot be printed; call it"),
        _ => Repr(v),
    };

    /// <summary>Python's <c>repr(v)</c>, which lists and dicts print their items with.</summary>
    public static string Repr(object? v)
    {
        switch (v)
        {
            case string s:
                return PyStrings.Repr(s);
            case List<object?> list:
                return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case object?[] tuple:
                return "(" + string.Join(", ", tuple.Select(Repr)) + (tuple.Length == 1 ? ",)" : ")");
            case OrderedDictionary<string, object?> dict:
                return "{" + string.Join(", ", dict.Select(p => Repr(p.Key) + ": " + Repr(p.Value))) + "}";
            case DictView view:
                return $"{view.Kind}({Repr(view.Items.ToList())})";
            case Undefined:
                return "Undefined";
            default:
                return Str(v);
        }
    }

    /// <summary>Python's float repr: the shortest round-tripping digits, exponent form below 1e-4 and from 1e16.</summary>
    public static string FloatRepr(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == 0) return double.IsNegative(d) ? "-0.0" : "0.0";
        // .NET's "R" gives the same shortest digits as Python's repr, in another layout: re-lay them out.
        string r = Math.Abs(d).ToString("R", CultureInfo.InvariantCulture);
        int e = r.IndexOfAny(['E', 'e']);
        int exponent = e < 0 ? 0 : int.Parse(r[(e + 1)..], CultureInfo.InvariantCulture);
        string mantissa = e < 0 ? r : r[..e];
        int dot = mantissa.IndexOf('.');
        string digits = dot < 0 ? mantissa : mantissa.Remove(dot, 1);
        int point = (dot < 0 ? mantissa.Length : dot) + exponent;   // value = 0.digits × 10^point
        int leading = digits.Length - digits.TrimStart('0').Length;
        digits = digits.Trim('0');
        point -= leading;

        string sign = d < 0 ? "-" : "";
        int sci = point - 1;
        if (sci < -4 || sci >= 16)
        {
            string m = digits.Length == 1 ? digits : digits[0] + "." + digits[1..];
            return $"{sign}{m}e{(sci < 0 ? "-" : "+")}{Math.Abs(sci):00}";
        }
        if (point <= 0) return sign + "0." + new string('0', -point) + digits;
        if (point >= digits.Length) return sign + digits + new string('0', point - digits.Length) + ".0";
        return sign + digits[..point] + "." + digits[point..];
    }

    /// <summary>Python's <c>==</c>; Jinja2's Undefined equals only another Undefined.</summary>
    public static bool Equal(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (a is null || b is null) return a is null && b is null;
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLong(a) == ToLong(b);
        switch (a)
        {
            case string s:
                return b is string t && s == t;
            case List<object?> x when b is List<object?> y:
                return SequenceEqual(x, y);
            case object?[] x when b is object?[] y:
                return SequenceEqual(x, y);
            case OrderedDictionary<string, object?> x when b is OrderedDictionary<string, object?> y:
                return x.Count == y.Count && x.All(p => y.TryGetValue(p.Key, out var other) && Equal(p.Value, other));
            default:
                return ReferenceEquals(a, b) || (a is BoundMethod m && m.Equals(b));
        }
    }

    static bool SequenceEqual(IReadOnlyList<object?> x, IReadOnlyList<object?> y) =>
        x.Count == y.Count && x.Zip(y).All(p => Equal(p.First, p.Second));

    /// <summary>Python's ordering (<c>&lt;</c> and friends): numbers, strings by code point, lists item by item.</summary>
    public static int Compare(object? a, object? b, string op)
    {
        if (a is Undefined u) throw u.Fail();
        if (b is Undefined v) throw v.Fail();
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLong(a).CompareTo(ToLong(b));
        if (a is string s && b is string t) return PyStrings.CompareCodePoints(s, t);
        if ((a is List<object?> && b is List<object?>) || (a is object?[] && b is object?[]))
        {
            var x = (IReadOnlyList<object?>)a;
            var y = (IReadOnlyList<object?>)b!;
            for (int i = 0; i < Math.Min(x.Count, y.Count); i++)
                if (!Equal(x[i], y[i])) return Compare(x[i], y[i], op);
            return x.Count.CompareTo(y.Count);
        }
        throw TypeError($"'{op}' not supported between instances of '{TypeName(a)}' and '{TypeName(b)}'");
    }

    /// <summary>Python's <c>in</c>.</summary>
    public static bool Contains(object? container, object? item) => container switch
    {
        string s => item is string t ? s.Contains(t, StringComparison.Ordinal)
            : throw TypeError($"'in <string>' requires string as left operand, not {TypeName(item)}"),
        OrderedDictionary<string, object?> dict => item is string key && dict.ContainsKey(key),
        _ => Iterate(container).Any(x => Equal(x, item)),
    };

    /// <summary>Python's <c>iter(v)</c> materialized: strings by code point, dicts by key; Undefined is empty.</summary>
    public static IReadOnlyList<object?> Iterate(object? v) => v switch
    {
        string s => PyStrings.CodePoints(s),
        IReadOnlyList<object?> list => list,
        OrderedDictionary<string, object?> dict => dict.Keys.ToList<object?>(),
        DictView view => view.Items,
        Undefined => [],
        _ => throw TypeError($"'{TypeName(v)}' object is not iterable"),
    };

    /// <summary>Python's <c>len(v)</c> (strings count code points); Undefined has length 0.</summary>
    public static long Length(object? v) => v switch
    {
        string s => PyStrings.CodePoints(s).Count,
        IReadOnlyList<object?> list => list.Count,
        OrderedDictionary<string, object?> dict => dict.Count,
        DictView view => view.Items.Count,
        LoopInfo loop => loop.Length,
        Undefined => 0,
        _ => throw TypeError($"object of type '{TypeName(v)}' has no len()"),
    };

    public static bool IsNumber(object? v) => v is bool or long or double;
    public static long ToLong(object? v) => v is bool b ? (b ? 1 : 0) : (long)v!;
    public static double ToDouble(object? v) => v is double d ? d : ToLong(v);

    /// <summary>Python's binary arithmetic (<c>+ - * / // % **</c>); an Undefined operand fails with its message.</summary>
    public static object? Arithmetic(string op, object? a, object? b)
    {
        if (a is Undefined u) throw u.Fail();
        if (b is Undefined v) throw v.Fail();
        if (IsNumber(a) && IsNumber(b))
        {
            if (op == "/") return ToDouble(b) == 0 ? throw new TemplateRuntimeException("division by zero") : ToDouble(a) / ToDouble(b);
            if (a is double || b is double || (op == "**" && ToLong(b) < 0)) return FloatArithmetic(op, ToDouble(a), ToDouble(b));
            return IntArithmetic(op, ToLong(a), ToLong(b));
        }
        switch (op, a, b)
        {
            case ("+", string s, string t):
                return s + t;
            case ("+", List<object?> x, List<object?> y):
                return x.Concat(y).ToList();
            case ("+", object?[] x, object?[] y):
                return x.Concat(y).ToArray();
            case ("*", string or List<object?> or object?[], bool or long):
                return Repeat(a, ToLong(b));
            case ("*", bool or long, string or List<object?> or object?[]):
                return Repeat(b, ToLong(a));
            case ("%", string, _):
                throw new TemplateRuntimeException("'%' formatting of strings is not supported; use '~' or '+' to build text");
        }
        throw TypeError($"unsupported operand type(s) for {op}: '{TypeName(a)}' and '{TypeName(b)}'");
    }

    static object Repeat(object? sequence, long times)
    {
        int n = (int)Math.Clamp(times, 0, int.MaxValue);
        return sequence switch
        {
            string s => string.Concat(Enumerable.Repeat(s, n)),
            List<object?> list => Enumerable.Repeat(list, n).SelectMany(x => x).ToList(),
            _ => Enumerable.Repeat((object?[])sequence!, n).SelectMany(x => x).ToArray(),
        };
    }

    static object IntArithmetic(string op, long a, long b)
    {
        try
        {
            checked
            {
                switch (op)
                {
                    case "+": return a + b;
                    case "-": return a - b;
                    case "*": return a * b;
                    case "**":
                        long result = 1;
                        for (long power = a, rest = b; rest > 0; rest >>= 1)
                        {
                            if ((rest & 1) == 1) result *= power;
                            if (rest > 1) power *= power;
                        }
                        return result;
                }
                if (b == 0) throw new TemplateRuntimeException("integer division or modulo by zero");
                long quotient = a / b, remainder = a % b;
                if (remainder != 0 && (remainder < 0) != (b < 0)) (quotient, remainder) = (quotient - 1, remainder + b);
                return op == "//" ? quotient : remainder;
            }
        }
        catch (OverflowException)
        {
            throw new TemplateRuntimeException($"integer overflow in {a} {op} {b} (Python's integers are unbounded; these are 64-bit)");
        }
    }

    static double FloatArithmetic(string op, double a, double b)
    {
        switch (op)
        {
            case "+": return a + b;
            case "-": return a - b;
            case "*": return a * b;
            case "**": return Math.Pow(a, b);
        }
        if (b == 0) throw new TemplateRuntimeException("float division by zero");
        // CPython's float_divmod, step for step, so results agree to the last bit.
        double mod = a % b, div = (a - mod) / b;   // C#'s % on doubles is C's fmod
        if (mod != 0)
        {
            if ((b < 0) != (mod < 0)) (mod, div) = (mod + b, div - 1);
        }
        else mod = Math.CopySign(0.0, b);
        if (op == "%") return mod;
        if (div == 0) return Math.CopySign(0.0, a / b);
        double floor = Math.Floor(div);
        return div - floor > 0.5 ? floor + 1 : floor;
    }

    /// <summary>Unary minus and plus.</summary>
    public static object Negate(object? v, bool negative) => v switch
    {
        Undefined u => throw u.Fail(),
        double d => negative ? -d : d,
        bool or long => (object)(negative ? checked(-ToLong(v)) : ToLong(v)),   // (object): a long must not become a double
        _ => throw TypeError($"bad operand type for unary {(negative ? '-' : '+')}: '{TypeName(v)}'"),
    };

    /// <summary>Jinja2's sandboxed attribute lookup (<c>v.name</c>): a method of the value, else a dict key, else undefined.</summary>
    public static object? GetAttribute(object? owner, string name)
    {
        switch (owner)
        {
            case Undefined u:
                throw u.Fail();
            case Namespace ns:
                return ns.Attributes.TryGetValue(name, out var value) ? value : Undefined.Member(owner, name);
            case LoopInfo loop:
                return loop.Get(name);
        }
        if (owner != null && Builtins.Method(owner, name) is { } method) return new BoundMethod(owner, method);
        if (owner is OrderedDictionary<string, object?> dict && dict.TryGetValue(name, out var item)) return item;
        return Undefined.Member(owner, name);
    }

    /// <summary>Jinja2's sandboxed subscript (<c>v[key]</c>): the item, else an attribute of that name, else undefined.</summary>
    public static object? GetItem(object? owner, object? key)
    {
        if (owner is Undefined u) throw u.Fail();
        switch (owner, key)
        {
            case (OrderedDictionary<string, object?> dict, string k) when dict.TryGetValue(k, out var value):
                return value;
            case (Namespace ns, string k) when ns.Attributes.TryGetValue(k, out var value):
                return value;
            case (string or IReadOnlyList<object?>, bool or long):
                var items = owner is string s ? PyStrings.CodePoints(s) : (IReadOnlyList<object?>)owner;
                long index = ToLong(key);
                if (index < 0) index += items.Count;
                if (index >= 0 && index < items.Count) return items[(int)index];
                break;
            case (_, string name):
                return GetAttribute(owner, name);
        }
        return Undefined.Member(owner, key);
    }

    /// <summary>Python's <c>v[start:stop:step]</c> on strings, lists and tuples (other values give undefined, as in Jinja2).</summary>
    public static object? Slice(object? owner, object? start, object? stop, object? step)
    {
        if (owner is Undefined u) throw u.Fail();
        bool IsIndex(object? x) => x is null or bool or long;
        if (owner is not (string or IReadOnlyList<object?>) || !IsIndex(start) || !IsIndex(stop) || !IsIndex(step))
            return Undefined.Because($"{ObjectTypeRepr(owner)} cannot be sliced with [{Repr(start)}:{Repr(stop)}:{Repr(step)}]");
        var items = owner is string s ? PyStrings.CodePoints(s) : (IReadOnlyList<object?>)owner;
        long by = step == null ? 1 : ToLong(step);
        if (by == 0) throw new TemplateRuntimeException("slice step cannot be zero");
        long n = items.Count;
        long lower = by < 0 ? -1 : 0, upper = by < 0 ? n - 1 : n;
        long Bound(object? x, long whenNone)
        {
            if (x == null) return whenNone;
            long i = ToLong(x);
            if (i < 0) i += n;
            return Math.Clamp(i, lower, upper);
        }
        long from = Bound(start, by < 0 ? upper : lower), to = Bound(stop, by < 0 ? lower : upper);
        var picked = new List<object?>();
        for (long i = from; by > 0 ? i < to : i > to; i += by) picked.Add(items[(int)i]);
        return owner switch
        {
            string => string.Concat(picked.Cast<string>()),
            object?[] => picked.ToArray(),
            _ => picked,
        };
    }

    /// <summary>A .NET value given to Render (or read from tokenizer_config.json) as a template value.</summary>
    public static object? FromDotNet(object? value, string what)
    {
        switch (value)
        {
            case null or string or bool or long or double or Undefined:
                return value;
            case int or short or sbyte or byte or ushort or uint:
                return Convert.ToInt64(value, CultureInfo.InvariantCulture);
            case float or decimal:
                return Convert.ToDouble(value, CultureInfo.InvariantCulture);
            case ChatTurn turn:
                return new OrderedDictionary<string, object?> { ["role"] = turn.Role, ["content"] = turn.Content };
            case JsonElement element:
                return FromJson(element);
            case JsonNode node:
                return FromJson(JsonSerializer.SerializeToElement(node));
            case IDictionary dict:
                var converted = new OrderedDictionary<string, object?>();
                foreach (DictionaryEntry entry in dict)
                    converted[entry.Key as string ?? throw new ArgumentException($"{what}: dictionary keys must be strings, not {entry.Key.GetType().Name}.")]
                        = FromDotNet(entry.Value, $"{what}[{entry.Key}]");
                return converted;
            case IEnumerable<KeyValuePair<string, object?>> pairs:
                return new OrderedDictionary<string, object?>(pairs.Select(p => KeyValuePair.Create(p.Key, FromDotNet(p.Value, $"{what}[{p.Key}]"))));
            case IEnumerable items:
                return items.Cast<object?>().Select((x, i) => FromDotNet(x, $"{what}[{i}]")).ToList();
            default:
                throw new ArgumentException($"{what}: a {value.GetType().Name} cannot be a template value (use strings, numbers, booleans, lists, dictionaries or JSON).");
        }
    }

    static object? FromJson(JsonElement element) => element.ValueKind switch
    {
        JsonValueKind.String => element.GetString(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        // JSON numbers written with a fraction or exponent are Python floats, the others ints (as json.loads reads them).
        JsonValueKind.Number => element.GetRawText().AsSpan().IndexOfAny(".eE") < 0 && element.TryGetInt64(out long l) ? (object)l : element.GetDouble(),
        JsonValueKind.Array => element.EnumerateArray().Select(FromJson).ToList(),
        _ => new OrderedDictionary<string, object?>(element.EnumerateObject().Select(p => KeyValuePair.Create(p.Name, FromJson(p.Value)))),
    };

    /// <summary>A Python-style JSON text (json.dumps), the <c>tojson</c> filter transformers installs.</summary>
    public static string ToJson(object? value, bool ensureAscii, string? indent, string itemSeparator, string keySeparator, bool sortKeys)
    {
        var sb = new StringBuilder();
        void Write(object? v, int depth)
        {
            switch (v)
            {
                case null: sb.Append("null"); break;
                case bool b: sb.Append(b ? "true" : "false"); break;
                case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); break;
                case double d:
                    sb.Append(double.IsNaN(d) ? "NaN" : double.IsInfinity(d) ? (d > 0 ? "Infinity" : "-Infinity") : FloatRepr(d));
                    break;
                case string s: PyStrings.JsonQuote(sb, s, ensureAscii); break;
                case IReadOnlyList<object?> list:
                    Container('[', ']', list.Count, i => Write(list[i], depth + 1), depth);
                    break;
                case OrderedDictionary<string, object?> dict:
                    var entries = sortKeys ? dict.OrderBy(p => p.Key, PyStrings.CodePointOrder).ToList() : dict.ToList();
                    Container('{', '}', entries.Count, i =>
                    {
                        PyStrings.JsonQuote(sb, entries[i].Key, ensureAscii);
                        sb.Append(keySeparator);
                        Write(entries[i].Value, depth + 1);
                    }, depth);
                    break;
                default:
                    throw TypeError($"Object of type {TypeName(v)} is not JSON serializable");
            }
        }
        void Container(char open, char close, int count, Action<int> item, int depth)
        {
            sb.Append(open);
            if (count == 0) { sb.Append(close); return; }
            string newline = indent == null ? "" : "\n" + string.Concat(Enumerable.Repeat(indent, depth + 1));
            for (int i = 0; i < count; i++)
            {
                if (i > 0) sb.Append(itemSeparator);
                sb.Append(newline);
                item(i);
            }
            if (indent != null) sb.Append('\n').Append(string.Concat(Enumerable.Repeat(indent, depth)));
            sb.Append(close);
        }
        Write(value, 0);
        return sb.ToString();
    }
}
