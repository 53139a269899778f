namespace MLNetFinetune.ChatTemplates;

/// <summary>1-based line and column in the template source.</summary>
readonly record struct Position(int Line, int Column);

enum TokenKind { Text, VariableBegin, VariableEnd, BlockBegin, BlockEnd, Name, String, Integer, Float, Operator, End }

/// <summary>A lexer token: <see cref="Text"/> is the source text (the data itself for Text), <see cref="Value"/> a literal's value.</summary>
sealed record Token(TokenKind Kind, string Text, Position At, object? Value = null);

// The syntax tree: statements render text, expressions compute Python values. Each node keeps its position so that a
// failure while rendering names the line and column, as Parse errors do.

abstract record Statement(Position At);
sealed record TextStatement(Position At, string Text) : Statement(At);
sealed record OutputStatement(Position At, Expression Value) : Statement(At);
sealed record IfStatement(Position At, IReadOnlyList<(Expression Condition, IReadOnlyList<Statement> Body)> Branches, IReadOnlyList<Statement>? Else) : Statement(At);
/// <summary><c>{% for a[, b] in items [if filter] %}</c>; <see cref="Unpack"/> when the target is a tuple of names.</summary>
sealed record ForStatement(Position At, IReadOnlyList<string> Targets, bool Unpack, Expression Items, Expression? Filter,
    IReadOnlyList<Statement> Body, IReadOnlyList<Statement>? Else) : Statement(At);
/// <summary><c>{% set name = value %}</c>, or <c>{% set name.attribute = value %}</c> on a namespace.</summary>
sealed record SetStatement(Position At, string Name, string? Attribute, Expression Value) : Statement(At);
sealed record BreakStatement(Position At) : Statement(At);
sealed record ContinueStatement(Position At) : Statement(At);
/// <summary>transformers' <c>{% generation %}</c> block (it marks assistant tokens); it renders its body.</summary>
sealed record GenerationStatement(Position At, IReadOnlyList<Statement> Body) : Statement(At);

abstract record Expression(Position At);
sealed record Literal(Position At, object? Value) : Expression(At);
sealed record NameExpression(Position At, string Name) : Expression(At);
sealed record ListExpression(Position At, IReadOnlyList<Expression> Items) : Expression(At);
sealed record TupleExpression(Position At, IReadOnlyList<Expression> Items) : Expression(At);
sealed record DictExpression(Position At, IReadOnlyList<(Expression Key, Expression Value)> Items) : Expression(At);
sealed record AttributeExpression(Position At, Expression Owner, string Name) : Expression(At);
sealed record ItemExpression(Position At, Expression Owner, Expression Key) : Expression(At);
sealed record SliceExpression(Position At, Expression Owner, Expression? Start, Expression? Stop, Expression? Step) : Expression(At);
/// <summary>A call of a global function (<see cref="NameExpression"/> callee) or a method (<see cref="AttributeExpression"/> callee).</summary>
sealed record CallExpression(Position At, Expression Callee, Arguments Arguments) : Expression(At);
/// <summary><c>namespace(...)</c>: Jinja2's one mutable object, built from an optional dict and keyword arguments.</summary>
sealed record NamespaceExpression(Position At, Expression? From, IReadOnlyList<(string Name, Expression Value)> Attributes) : Expression(At);
sealed record FilterExpression(Position At, Expression Value, Builtin Filter, Arguments Arguments) : Expression(At);
sealed record TestExpression(Position At, Expression Value, Builtin Test, Arguments Arguments, bool Negated) : Expression(At);
/// <summary><c>not</c>, unary <c>-</c> and <c>+</c>.</summary>
sealed record UnaryExpression(Position At, string Operator, Expression Operand) : Expression(At);
/// <summary><c>and or + - * / // % ** ~</c>.</summary>
sealed record BinaryExpression(Position At, string Operator, Expression Left, Expression Right) : Expression(At);
/// <summary>A comparison chain, <c>a &lt; b == c</c>, as Python evaluates it; operators include <c>in</c> and <c>not in</c>.</summary>
sealed record CompareExpression(Position At, Expression First, IReadOnlyList<(string Operator, Expression Operand)> Rest) : Expression(At);
/// <summary><c>then if condition else otherwise</c>; without <c>else</c> the result is undefined when false.</summary>
sealed record ConditionalExpression(Position At, Expression Condition, Expression Then, Expression? Otherwise) : Expression(At);

sealed record Arguments(IReadOnlyList<Expression> Positional, IReadOnlyList<(string Name, Expression Value)> Keywords)
{
    public static readonly Arguments None = new([], []);
}
