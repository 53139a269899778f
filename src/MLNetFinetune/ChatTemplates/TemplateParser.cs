namespace MLNetFinetune.ChatTemplates;

/// <summary>
/// Builds the syntax tree from tokens with Jinja2's grammar and operator precedence (lowest first):
/// <c>x if c else y</c>, <c>or</c>, <c>and</c>, <c>not</c>, comparisons and <c>in</c>, <c>+ -</c>, <c>~</c>,
/// <c>* / // %</c>, <c>**</c>, unary <c>- +</c>, then postfix <c>.name [i] [a:b] (args)</c> followed by
/// <c>|filter</c> and <c>is test</c>. Every filter, test, method and function name is checked here, with its
/// arguments, so an unsupported template fails at Parse with its line and column rather than halfway through a render.
/// </summary>
sealed class TemplateParser
{
    static readonly string[] BlockEnds = ["endfor", "endif", "else", "elif", "endgeneration"];
    static readonly HashSet<string> Constants = ["true", "false", "none", "True", "False", "None"];
    static readonly HashSet<string> Keywords = ["in", "is", "and", "or", "not", "if", "else"];

    // Deeper nesting than any real template has would otherwise end in a stack overflow, which cannot be caught.
    const int MaxNesting = 100;

    readonly List<Token> _tokens;
    readonly string _origin;
    readonly Stack<(Token Tag, string End)> _open = new();
    int _next;
    int _loopDepth;
    int _nesting;

    TemplateParser(List<Token> tokens, string origin) => (_tokens, _origin) = (tokens, origin);

    public static IReadOnlyList<Statement> Parse(List<Token> tokens, string origin) => new TemplateParser(tokens, origin).Body([], out _);

    Token Current => _tokens[_next];
    Token Peek(int ahead) => _tokens[Math.Min(_next + ahead, _tokens.Count - 1)];
    Token Take() => _tokens[_next++];
    bool IsOperator(string op) => Current.Kind == TokenKind.Operator && Current.Text == op;
    bool IsName(string name) => Current.Kind == TokenKind.Name && Current.Text == name;

    bool SkipOperator(string op)
    {
        if (!IsOperator(op)) return false;
        _next++;
        return true;
    }

    bool SkipName(string name)
    {
        if (!IsName(name)) return false;
        _next++;
        return true;
    }

    T Nested<T>(Func<T> parse)
    {
        if (++_nesting > MaxNesting) throw Error(Current, $"the template nests more than {MaxNesting} levels deep");
        try
        {
            return parse();
        }
        finally
        {
            _nesting--;
        }
    }

    ChatTemplateException Error(Token at, string problem) => ChatTemplateException.At(_origin, at.At, problem);
    ChatTemplateException Error(Position at, string problem) => ChatTemplateException.At(_origin, at, problem);

    static string Describe(Token t) => t.Kind switch
    {
        TokenKind.End => "the end of the template",
        TokenKind.BlockEnd => "'%}'",
        TokenKind.VariableEnd => "'}}'",
        TokenKind.String => "a string",
        TokenKind.Integer or TokenKind.Float => $"the number {t.Text}",
        _ => $"'{t.Text}'",
    };

    void Expect(string op)
    {
        if (!SkipOperator(op)) throw Error(Current, $"expected '{op}', found {Describe(Current)}");
    }

    void Expect(TokenKind kind, string what)
    {
        if (Current.Kind != kind) throw Error(Current, $"expected {what}, found {Describe(Current)}");
        _next++;
    }

    void ExpectBlockEnd() => Expect(TokenKind.BlockEnd, "'%}'");

    // Statements up to a block tag named in `until` (consumed up to and including its name, returned in `endedBy`), or
    // to the end of the template when `until` is empty.
    List<Statement> Body(string[] until, out string endedBy)
    {
        var body = new List<Statement>();
        while (true)
        {
            var token = Current;
            switch (token.Kind)
            {
                case TokenKind.Text:
                    _next++;
                    body.Add(new TextStatement(token.At, token.Text));
                    break;
                case TokenKind.VariableBegin:
                    _next++;
                    body.Add(new OutputStatement(token.At, Tuple(conditional: true)));
                    Expect(TokenKind.VariableEnd, "'}}'");
                    break;
                case TokenKind.BlockBegin:
                    _next++;
                    var tag = Current;
                    if (tag.Kind != TokenKind.Name) throw Error(tag, $"expected a tag name after '{{%', found {Describe(tag)}");
                    _next++;
                    if (until.Contains(tag.Text))
                    {
                        endedBy = tag.Text;
                        return body;
                    }
                    body.Add(Statement(tag));
                    break;
                default:
                    if (_open.TryPeek(out var open))
                        throw Error(open.Tag, $"'{{% {open.Tag.Text} %}}' is never closed (missing '{{% {open.End} %}}')");
                    endedBy = "";
                    return body;
            }
        }
    }

    // A block body with its opening tag on the stack, for the messages about unclosed and misplaced tags.
    List<Statement> Block(Token tag, string end, string[] until, out string endedBy)
    {
        _open.Push((tag, end));
        string ended = "";
        var body = Nested(() => Body(until, out ended));
        _open.Pop();
        endedBy = ended;
        return body;
    }

    Statement Statement(Token tag)
    {
        switch (tag.Text)
        {
            case "for": return For(tag);
            case "if": return If(tag);
            case "set": return Set(tag);
            case "break" or "continue":
                // transformers enables Jinja2's loopcontrols extension.
                if (_loopDepth == 0) throw Error(tag, $"'{tag.Text}' outside a for loop");
                ExpectBlockEnd();
                return tag.Text == "break" ? new BreakStatement(tag.At) : new ContinueStatement(tag.At);
            case "generation":
                ExpectBlockEnd();
                // The body renders like a macro's in Jinja2: a loop outside it cannot be broken from inside.
                int loops = _loopDepth;
                _loopDepth = 0;
                var body = Block(tag, "endgeneration", ["endgeneration"], out _);
                _loopDepth = loops;
                ExpectBlockEnd();
                return new GenerationStatement(tag.At, body);
        }
        if (BlockEnds.Contains(tag.Text))
            throw Error(tag, _open.TryPeek(out var open)
                ? $"unexpected '{{% {tag.Text} %}}': the innermost open block is '{{% {open.Tag.Text} %}}' (line {open.Tag.At.Line}), closed by '{{% {open.End} %}}'"
                : $"unexpected '{{% {tag.Text} %}}': no block is open");
        throw Error(tag, $"tag '{tag.Text}' is not supported");
    }

    Statement For(Token tag)
    {
        var targets = new List<string>();
        bool unpack = false;
        if (SkipOperator("("))
        {
            unpack = true;
            do { if (!IsOperator(")")) targets.Add(AssignedName()); } while (SkipOperator(","));
            Expect(")");
        }
        else
        {
            targets.Add(AssignedName());
            while (SkipOperator(","))
            {
                unpack = true;
                targets.Add(AssignedName());   // Jinja2 refuses a trailing comma here ("for a, in")
            }
        }
        if (!SkipName("in")) throw Error(Current, $"expected 'in', found {Describe(Current)}");
        var items = Tuple(conditional: false);
        var filter = SkipName("if") ? Expression() : null;
        if (IsName("recursive")) throw Error(Current, "recursive loops are not supported");
        ExpectBlockEnd();
        _loopDepth++;
        var body = Block(tag, "endfor", ["endfor", "else"], out string endedBy);
        _loopDepth--;
        List<Statement>? otherwise = null;
        if (endedBy == "else")
        {
            ExpectBlockEnd();
            otherwise = Block(tag, "endfor", ["endfor"], out _);
        }
        ExpectBlockEnd();
        return new ForStatement(tag.At, targets, unpack, items, filter, body, otherwise);
    }

    Statement If(Token tag)
    {
        var branches = new List<(Expression, IReadOnlyList<Statement>)>();
        var condition = Tuple(conditional: false);
        while (true)
        {
            ExpectBlockEnd();
            var body = Block(tag, "endif", ["elif", "else", "endif"], out string endedBy);
            branches.Add((condition, body));
            if (endedBy == "elif")
            {
                condition = Tuple(conditional: false);
                continue;
            }
            List<Statement>? otherwise = null;
            if (endedBy == "else")
            {
                ExpectBlockEnd();
                otherwise = Block(tag, "endif", ["endif"], out _);
            }
            ExpectBlockEnd();
            return new IfStatement(tag.At, branches, otherwise);
        }
    }

    Statement Set(Token tag)
    {
        string name = AssignedName();
        string? attribute = null;
        if (SkipOperator(".")) attribute = Current.Kind == TokenKind.Name ? Take().Text : throw Error(Current, $"expected an attribute name, found {Describe(Current)}");
        if (IsOperator(",")) throw Error(Current, "setting several names at once is not supported");
        if (Current.Kind == TokenKind.BlockEnd) throw Error(tag, "block assignments ('{% set name %}...{% endset %}') are not supported");
        Expect("=");
        var value = Tuple(conditional: true);
        ExpectBlockEnd();
        return new SetStatement(tag.At, name, attribute, value);
    }

    string AssignedName()
    {
        var token = Current;
        if (token.Kind != TokenKind.Name || Keywords.Contains(token.Text)) throw Error(token, $"expected a name to assign to, found {Describe(token)}");
        if (Constants.Contains(token.Text)) throw Error(token, $"cannot assign to '{token.Text}'");
        _next++;
        return token.Text;
    }

    // An expression, or several separated by commas (a tuple), as in "{% set pair = a, b %}".
    Expression Tuple(bool conditional)
    {
        var first = conditional ? Expression() : Or();
        if (!IsOperator(",")) return first;
        var items = new List<Expression> { first };
        while (SkipOperator(",") && Current.Kind is not (TokenKind.VariableEnd or TokenKind.BlockEnd) && !IsOperator(")"))
            items.Add(conditional ? Expression() : Or());
        return new TupleExpression(first.At, items);
    }

    Expression Expression() => Nested(() =>
    {
        var e = Or();
        while (SkipName("if"))
        {
            var condition = Or();
            var otherwise = SkipName("else") ? Expression() : null;
            e = new ConditionalExpression(e.At, condition, e, otherwise);
        }
        return e;
    });

    Expression Or()
    {
        var e = And();
        while (IsName("or")) e = new BinaryExpression(Take().At, "or", e, And());
        return e;
    }

    Expression And()
    {
        var e = Not();
        while (IsName("and")) e = new BinaryExpression(Take().At, "and", e, Not());
        return e;
    }

    Expression Not() => IsName("not") ? new UnaryExpression(Take().At, "not", Nested(Not)) : Compare();

    Expression Compare()
    {
        var first = Sum();
        var rest = new List<(string, Expression)>();
        while (true)
        {
            if (Current.Kind == TokenKind.Operator && Current.Text is "==" or "!=" or "<" or ">" or "<=" or ">=")
                rest.Add((Take().Text, Sum()));
            else if (SkipName("in"))
                rest.Add(("in", Sum()));
            else if (IsName("not") && Peek(1) is { Kind: TokenKind.Name, Text: "in" })
            {
                _next += 2;
                rest.Add(("not in", Sum()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpression(first.At, first, rest);
    }

    Expression Sum()
    {
        var e = Concat();
        while (IsOperator("+") || IsOperator("-")) { var op = Take(); e = new BinaryExpression(op.At, op.Text, e, Concat()); }
        return e;
    }

    Expression Concat()
    {
        var e = Product();
        while (IsOperator("~")) e = new BinaryExpression(Take().At, "~", e, Product());
        return e;
    }

    Expression Product()
    {
        var e = Power();
        while (Current.Kind == TokenKind.Operator && Current.Text is "*" or "/" or "//" or "%") { var op = Take(); e = new BinaryExpression(op.At, op.Text, e, Power()); }
        return e;
    }

    // Left-associative, as Jinja2 parses it: 2 ** 3 ** 2 is 64.
    Expression Power()
    {
        var e = Unary(withFilters: true);
        while (IsOperator("**")) e = new BinaryExpression(Take().At, "**", e, Unary(withFilters: true));
        return e;
    }

    // Filters bind to the whole signed operand, as in Jinja2: -x|abs is (-x)|abs.
    Expression Unary(bool withFilters)
    {
        var e = IsOperator("-") || IsOperator("+") ? new UnaryExpression(Current.At, Take().Text, Nested(() => Unary(withFilters: false))) : Primary();
        e = Postfix(e);
        return withFilters ? FiltersAndTests(e) : e;
    }

    Expression Primary()
    {
        var token = Current;
        switch (token.Kind)
        {
            case TokenKind.Name:
                _next++;
                return token.Text switch
                {
                    "true" or "True" => new Literal(token.At, true),
                    "false" or "False" => new Literal(token.At, false),
                    "none" or "None" => new Literal(token.At, null),
                    _ => new NameExpression(token.At, token.Text),
                };
            case TokenKind.String:
                // Adjacent strings are one, as in Python: 'a' 'b' is 'ab'.
                string text = "";
                while (Current.Kind == TokenKind.String) text += (string)Take().Value!;
                return new Literal(token.At, text);
            case TokenKind.Integer or TokenKind.Float:
                _next++;
                return new Literal(token.At, token.Value);
        }
        if (SkipOperator("("))
        {
            if (SkipOperator(")")) return new TupleExpression(token.At, []);
            var items = new List<Expression> { Expression() };
            bool tuple = false;
            while (SkipOperator(","))
            {
                tuple = true;
                if (IsOperator(")")) break;
                items.Add(Expression());
            }
            Expect(")");
            return tuple ? new TupleExpression(token.At, items) : items[0];
        }
        if (SkipOperator("["))
        {
            var items = new List<Expression>();
            while (!IsOperator("]"))
            {
                items.Add(Expression());
                if (!SkipOperator(",")) break;
            }
            Expect("]");
            return new ListExpression(token.At, items);
        }
        if (SkipOperator("{"))
        {
            var items = new List<(Expression, Expression)>();
            while (!IsOperator("}"))
            {
                var key = Expression();
                Expect(":");
                items.Add((key, Expression()));
                if (!SkipOperator(",")) break;
            }
            Expect("}");
            return new DictExpression(token.At, items);
        }
        throw Error(token, $"unexpected {Describe(token)}");
    }

    Expression Postfix(Expression e)
    {
        while (true)
        {
            if (SkipOperator("."))
            {
                var name = Current;
                if (name.Kind == TokenKind.Name) e = new AttributeExpression(Take().At, e, name.Text);
                else if (name.Kind == TokenKind.Integer) e = new ItemExpression(Take().At, e, new Literal(name.At, name.Value));
                else throw Error(name, $"expected an attribute name after '.', found {Describe(name)}");
            }
            else if (IsOperator("[")) e = Subscript(e);
            else if (IsOperator("(")) e = Call(e);
            else return e;
        }
    }

    Expression Subscript(Expression owner)
    {
        var open = Take();
        Expression? start = IsOperator(":") ? null : Expression(), stop = null, step = null;
        if (!SkipOperator(":"))
        {
            Expect("]");
            return new ItemExpression(open.At, owner, start!);
        }
        if (!IsOperator(":") && !IsOperator("]")) stop = Expression();
        if (SkipOperator(":") && !IsOperator("]")) step = Expression();
        Expect("]");
        return new SliceExpression(open.At, owner, start, stop, step);
    }

    Arguments ArgumentList()
    {
        Expect("(");
        var positional = new List<Expression>();
        var keywords = new List<(string, Expression)>();
        while (!IsOperator(")"))
        {
            if (Current.Kind == TokenKind.Name && Peek(1) is { Kind: TokenKind.Operator, Text: "=" })
            {
                string name = Take().Text;
                _next++;
                keywords.Add((name, Expression()));
            }
            else if (keywords.Count > 0) throw Error(Current, "a positional argument cannot follow a keyword argument");
            else positional.Add(Expression());
            if (!SkipOperator(",")) break;
        }
        Expect(")");
        return new Arguments(positional, keywords);
    }

    void CheckArguments(Builtin builtin, Arguments arguments, Token at)
    {
        if (builtin.Check(arguments.Positional.Count, arguments.Keywords.Select(k => k.Name).ToList()) is { } problem) throw Error(at, problem);
    }

    Expression Call(Expression callee)
    {
        var open = Current;
        var arguments = ArgumentList();
        switch (callee)
        {
            case NameExpression { Name: "namespace" }:
                if (arguments.Positional.Count > 1) throw Error(open, "namespace() takes at most one dict besides its keyword arguments");
                return new NamespaceExpression(callee.At, arguments.Positional.FirstOrDefault(), arguments.Keywords);
            case NameExpression function:
                if (!Builtins.Functions.TryGetValue(function.Name, out var builtin)) throw Error(function.At, $"function '{function.Name}' is not supported");
                CheckArguments(builtin, arguments, open);
                return new CallExpression(callee.At, callee, arguments);
            case AttributeExpression method:
                if (!Builtins.MethodsByName.TryGetValue(method.Name, out var spec)) throw Error(method.At, $"method '{method.Name}' is not supported");
                if (arguments.Keywords.Count > 0) throw Error(open, $"method '{method.Name}' takes no keyword arguments here");
                CheckArguments(spec, arguments, open);
                return new CallExpression(method.At, callee, arguments);
            default:
                throw Error(open, "only functions and methods can be called");
        }
    }

    Expression FiltersAndTests(Expression e)
    {
        while (true)
        {
            if (SkipOperator("|"))
            {
                var name = Current;
                if (name.Kind != TokenKind.Name) throw Error(name, $"expected a filter name after '|', found {Describe(name)}");
                _next++;
                if (!Builtins.Filters.TryGetValue(name.Text, out var filter)) throw Error(name, $"filter '{name.Text}' is not supported");
                var arguments = IsOperator("(") ? ArgumentList() : Arguments.None;
                CheckArguments(filter, arguments, name);
                e = new FilterExpression(name.At, e, filter, arguments);
            }
            else if (SkipName("is"))
            {
                bool negated = SkipName("not");
                var name = Current;
                if (name.Kind != TokenKind.Name) throw Error(name, $"expected a test name after 'is', found {Describe(name)}");
                _next++;
                if (!Builtins.Tests.TryGetValue(name.Text, out var test)) throw Error(name, $"test '{name.Text}' is not supported");
                Arguments arguments;
                if (IsOperator("(")) arguments = ArgumentList();
                // Jinja2 also takes one bare argument: "x is divisibleby 3", "x is in ['a', 'b']".
                else if ((Current.Kind is TokenKind.Name or TokenKind.String or TokenKind.Integer or TokenKind.Float || IsOperator("[") || IsOperator("{"))
                         && !IsName("else") && !IsName("or") && !IsName("and"))
                {
                    if (IsName("is")) throw Error(Current, "tests cannot be chained with 'is'");
                    arguments = new Arguments([Postfix(Primary())], []);
                }
                else arguments = Arguments.None;
                CheckArguments(test, arguments, name);
                e = new TestExpression(name.At, e, test, arguments, negated);
            }
            else if (IsOperator("(")) e = Call(e);
            else return e;
        }
    }
}
