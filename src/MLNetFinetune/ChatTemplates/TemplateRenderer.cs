using System.Runtime.CompilerServices;
using System.Text;

namespace MLNetFinetune.ChatTemplates;

/// <summary>
/// Walks the syntax tree and writes the text. Scoping follows Jinja2: a for loop's body (each iteration afresh) and its
/// else block see the enclosing variables but their <c>{% set %}</c>s stay inside, while <c>if</c> adds no scope. That
/// is why chat templates carry state out of loops in a <c>namespace</c>, the one object that can be changed.
/// </summary>
sealed class TemplateRenderer
{
    enum Flow { Normal, Break, Continue }

    sealed class Scope(Scope? parent)
    {
        readonly Scope? _parent = parent;
        readonly Dictionary<string, object?> _variables = [];

        public bool TryGet(string name, out object? value)
        {
            for (var scope = this; scope != null; scope = scope._parent)
                if (scope._variables.TryGetValue(name, out value)) return true;
            value = null;
            return false;
        }

        public void Set(string name, object? value) => _variables[name] = value;
    }

    readonly string _origin;
    readonly StringBuilder _output = new();
    Scope _scope;

    TemplateRenderer(string origin, IReadOnlyDictionary<string, object?> context)
    {
        _origin = origin;
        var globals = new Scope(null);
        foreach (var function in Builtins.Functions.Values) globals.Set(function.Name, function);
        _scope = new Scope(globals);
        foreach (var (name, value) in context) _scope.Set(name, value);
    }

    /// <summary>Renders with the context's variables (template values already), over the globals.</summary>
    public static string Render(IReadOnlyList<Statement> template, string origin, IReadOnlyDictionary<string, object?> context)
    {
        var renderer = new TemplateRenderer(origin, context);
        renderer.Run(template);
        return renderer._output.ToString();
    }

    ChatTemplateException Error(Position at, string problem, Exception? inner = null) => ChatTemplateException.At(_origin, at, problem, inner);

    // Value operations report with Python's or Jinja2's words; this adds where in the template it happened.
    T Guard<T>(Position at, Func<T> operation)
    {
        try
        {
            return operation();
        }
        catch (TemplateRuntimeException e)
        {
            throw Error(at, e.Message, e);
        }
    }

    Flow Run(IReadOnlyList<Statement> body)
    {
        foreach (var statement in body)
        {
            var flow = Run(statement);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    Flow Run(Statement statement)
    {
        switch (statement)
        {
            case TextStatement text:
                _output.Append(text.Text);
                return Flow.Normal;
            case OutputStatement output:
                var value = Evaluate(output.Value);
                _output.Append(Guard(output.Value.At, () => Py.Str(value)));
                return Flow.Normal;
            case IfStatement conditional:
                foreach (var (condition, body) in conditional.Branches)
                    if (Py.Truthy(Evaluate(condition))) return Run(body);
                return conditional.Else != null ? Run(conditional.Else) : Flow.Normal;
            case ForStatement loop:
                return RunFor(loop);
            case SetStatement set:
                Assign(set);
                return Flow.Normal;
            case BreakStatement:
                return Flow.Break;
            case ContinueStatement:
                return Flow.Continue;
            case GenerationStatement generation:
                InNewScope(() => Run(generation.Body));
                return Flow.Normal;
            default:
                throw new InvalidOperationException($"Unknown statement {statement.GetType().Name}.");
        }
    }

    T InNewScope<T>(Func<T> action)
    {
        var outer = _scope;
        _scope = new Scope(outer);
        try
        {
            return action();
        }
        finally
        {
            _scope = outer;
        }
    }

    Flow RunFor(ForStatement loop)
    {
        var source = Evaluate(loop.Items);
        var items = Guard(loop.Items.At, () => Py.Iterate(source));
        // Jinja2 filters first ("for m in messages if m.role != 'system'"), so loop.index and loop.length count the kept items.
        if (loop.Filter is { } filter)
            items = items.Where(item => InNewScope(() => { Bind(loop, item); return Py.Truthy(Evaluate(filter)); })).ToList();
        var info = new LoopInfo(items);
        for (int i = 0; i < items.Count; i++)
        {
            info.Index0 = i;
            var flow = InNewScope(() =>
            {
                Bind(loop, items[i]);
                _scope.Set("loop", info);
                return Run(loop.Body);
            });
            if (flow == Flow.Break) break;
        }
        // Jinja2's for-else runs when the loop ran no iteration; a break there leaves an enclosing loop.
        return items.Count == 0 && loop.Else != null ? InNewScope(() => Run(loop.Else)) : Flow.Normal;
    }

    void Bind(ForStatement loop, object? item)
    {
        if (!loop.Unpack)
        {
            _scope.Set(loop.Targets[0], item);
            return;
        }
        var values = Guard(loop.At, () => Py.Iterate(item));
        if (values.Count != loop.Targets.Count)
            throw Error(loop.At, values.Count > loop.Targets.Count ? $"too many values to unpack (expected {loop.Targets.Count})"
                : $"not enough values to unpack (expected {loop.Targets.Count}, got {values.Count})");
        for (int i = 0; i < values.Count; i++) _scope.Set(loop.Targets[i], values[i]);
    }

    void Assign(SetStatement set)
    {
        var value = Evaluate(set.Value);
        if (set.Attribute == null)
        {
            _scope.Set(set.Name, value);
            return;
        }
        if (!_scope.TryGet(set.Name, out var target) || target is not Namespace ns)
            throw Error(set.At, $"cannot assign attribute on non-namespace object ('{set.Name}' is {(target is null or Undefined ? "undefined" : "of type " + Py.TypeName(target))})");
        ns.Attributes[set.Attribute] = value;
    }

    object? Evaluate(Expression expression)
    {
        // A chain like 1 + 1 + ... parses in a loop but evaluates recursively; stop before the stack runs out.
        if (!RuntimeHelpers.TryEnsureSufficientExecutionStack()) throw Error(expression.At, "the expression is nested too deeply to evaluate");
        try
        {
            return EvaluateCore(expression);
        }
        catch (TemplateRuntimeException e)
        {
            throw Error(expression.At, e.Message, e);
        }
    }

    object? EvaluateCore(Expression expression)
    {
        switch (expression)
        {
            case Literal literal:
                return literal.Value;
            case NameExpression name:
                return _scope.TryGet(name.Name, out var value) ? value : Undefined.Name(name.Name);
            case ListExpression list:
                return list.Items.Select(Evaluate).ToList();
            case TupleExpression tuple:
                return tuple.Items.Select(Evaluate).ToArray();
            case DictExpression dict:
                var built = new OrderedDictionary<string, object?>();
                foreach (var (key, item) in dict.Items)
                    built[Evaluate(key) as string ?? throw Py.TypeError("dict keys must be strings here")] = Evaluate(item);
                return built;
            case AttributeExpression attribute:
                return Py.GetAttribute(Evaluate(attribute.Owner), attribute.Name);
            case ItemExpression item:
                var owner = Evaluate(item.Owner);
                return Py.GetItem(owner, Evaluate(item.Key));
            case SliceExpression slice:
                var sliced = Evaluate(slice.Owner);
                object? Bound(Expression? e) => e == null ? null : Evaluate(e);
                return Py.Slice(sliced, Bound(slice.Start), Bound(slice.Stop), Bound(slice.Step));
            case CallExpression call:
                return Call(call);
            case NamespaceExpression ns:
                var attributes = new OrderedDictionary<string, object?>();
                if (ns.From != null)
                    foreach (var (key, item) in Evaluate(ns.From) as OrderedDictionary<string, object?> ?? throw Py.TypeError("namespace() takes a dict"))
                        attributes[key] = item;
                foreach (var (key, item) in ns.Attributes) attributes[key] = Evaluate(item);
                return new Namespace(attributes);
            case FilterExpression filter:
                var filtered = Evaluate(filter.Value);
                return filter.Filter.Apply(filtered, Arguments(filter.Filter, filter.Arguments));
            case TestExpression test:
                var tested = Evaluate(test.Value);
                return (bool)test.Test.Apply(tested, Arguments(test.Test, test.Arguments))! != test.Negated;
            case UnaryExpression unary:
                var operand = Evaluate(unary.Operand);
                return unary.Operator == "not" ? !Py.Truthy(operand) : Py.Negate(operand, negative: unary.Operator == "-");
            case BinaryExpression binary:
                var left = Evaluate(binary.Left);
                return binary.Operator switch
                {
                    // Python's and/or give an operand, not a bool: "{{ name or 'assistant' }}".
                    "and" => Py.Truthy(left) ? Evaluate(binary.Right) : left,
                    "or" => Py.Truthy(left) ? left : Evaluate(binary.Right),
                    "~" => Py.Str(left) + Py.Str(Evaluate(binary.Right)),
                    _ => Py.Arithmetic(binary.Operator, left, Evaluate(binary.Right)),
                };
            case CompareExpression compare:
                var current = Evaluate(compare.First);
                foreach (var (op, next) in compare.Rest)
                {
                    var right = Evaluate(next);
                    if (!Compare(op, current, right)) return false;
                    current = right;
                }
                return true;
            case ConditionalExpression conditional:
                if (Py.Truthy(Evaluate(conditional.Condition))) return Evaluate(conditional.Then);
                return conditional.Otherwise != null ? Evaluate(conditional.Otherwise)
                    : Undefined.Because($"the inline if-expression on line {conditional.At.Line} evaluated to false and no else section was defined.");
            default:
                throw new InvalidOperationException($"Unknown expression {expression.GetType().Name}.");
        }
    }

    static bool Compare(string op, object? left, object? right) => op switch
    {
        "==" => Py.Equal(left, right),
        "!=" => !Py.Equal(left, right),
        "in" => Py.Contains(right, left),
        "not in" => !Py.Contains(right, left),
        "<" => Py.Compare(left, right, op) < 0,
        "<=" => Py.Compare(left, right, op) <= 0,
        ">" => Py.Compare(left, right, op) > 0,
        _ => Py.Compare(left, right, op) >= 0,
    };

    object?[] Arguments(Builtin builtin, Arguments arguments) => builtin.Bind(
        arguments.Positional.Select(Evaluate).ToList(),
        arguments.Keywords.Select(k => KeyValuePair.Create(k.Name, Evaluate(k.Value))).ToList());

    object? Call(CallExpression call)
    {
        var callee = call.Callee is AttributeExpression method ? Py.GetAttribute(Evaluate(method.Owner), method.Name) : Evaluate(call.Callee);
        return callee switch
        {
            BoundMethod bound => bound.Method.Apply(bound.Receiver, Arguments(bound.Method, call.Arguments)),
            Builtin function => function.Apply(null, Arguments(function, call.Arguments)),
            Undefined undefined => throw undefined.Fail(),
            _ => throw Py.TypeError($"'{Py.TypeName(callee)}' object is not callable"),
        };
    }
}
