using MLNetFinetune.ChatTemplates;

namespace MLNetFinetune.Tests.ChatTemplates;

/// <summary>What a template outside the supported part of Jinja2, a broken one, or one that refuses a conversation says.</summary>
public class ChatTemplateErrorTests
{
    const string Origin = "tokenizer_config.json: chat_template";

    static ChatTemplateException ParseError(string template) => Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse(template, Origin));

    [Fact]
    public void AnUnsupportedFilterIsRefusedAtParseWithOriginLineAndColumn()
    {
        var e = ParseError("{% for message in messages %}\n{{ message['role'] }}\n{{ content|wordcount }}\n{% endfor %}");
        Assert.Equal("tokenizer_config.json: chat_template line 3, column 12: filter 'wordcount' is not supported", e.Message);
        Assert.Equal((Origin, 3, 12, "filter 'wordcount' is not supported"), (e.Origin, e.Line, e.Column, e.Problem));
    }

    [Theory]
    [InlineData("{% macro turn(m) %}{{ m }}{% endmacro %}", 1, 4, "tag 'macro' is not supported")]
    [InlineData("x\n  {% include 'other.jinja' %}", 2, 6, "tag 'include' is not supported")]
    [InlineData("{{ m is sameas none }}", 1, 9, "test 'sameas' is not supported")]
    [InlineData("{{ messages.append(1) }}", 1, 13, "method 'append' is not supported")]
    [InlineData("{{ lipsum(2) }}", 1, 4, "function 'lipsum' is not supported")]
    [InlineData("{{ x|selectattr('role') }}", 1, 6, "filter 'selectattr' is not supported")]
    [InlineData("{% raw %}{{ x }}{% endraw %}", 1, 4, "raw blocks are not supported")]
    [InlineData("{% set x %}text{% endset %}", 1, 4, "block assignments ('{% set name %}...{% endset %}') are not supported")]
    [InlineData("{% set a, b = 1, 2 %}", 1, 9, "setting several names at once is not supported")]
    [InlineData("{% for m in messages recursive %}{% endfor %}", 1, 22, "recursive loops are not supported")]
    [InlineData("{{ s.strip(chars=' ') }}", 1, 11, "method 'strip' takes no keyword arguments here")]
    [InlineData("{{ x|trim(' ', 'x') }}", 1, 6, "filter 'trim' takes at most 1 argument (2 given)")]
    [InlineData("{{ x|default(nope=1) }}", 1, 6, "filter 'default' has no argument 'nope'")]
    [InlineData("{{ x|replace('a') }}", 1, 6, "filter 'replace' needs argument 'new'")]
    [InlineData("{{ x|tojson(indent=2, indent=4) }}", 1, 6, "filter 'tojson' got argument 'indent' twice")]
    [InlineData("{{ x is divisibleby }}", 1, 9, "test 'divisibleby' needs argument 'num'")]
    [InlineData("{{ raise_exception() }}", 1, 19, "function 'raise_exception' needs argument 'message'")]
    [InlineData("{{ 'a' '\\N{BULLET}' }}", 1, 9, "\\N{...} escapes are not supported")]
    [InlineData("{{ (x|trim)() }}", 1, 12, "only functions and methods can be called")]
    public void UnsupportedJinjaIsRefusedAtParse(string template, int line, int column, string problem)
    {
        var e = ParseError(template);
        Assert.Equal((line, column, problem), (e.Line, e.Column, e.Problem));
        Assert.StartsWith($"{Origin} line {line}, column {column}: ", e.Message);
    }

    [Theory]
    [InlineData("{% for m in messages %}\n{{ m }}", 1, 4, "'{% for %}' is never closed (missing '{% endfor %}')")]
    [InlineData("{% if x %}{% for m in y %}{% endif %}", 1, 30, "unexpected '{% endif %}': the innermost open block is '{% for %}' (line 1), closed by '{% endfor %}'")]
    [InlineData("text\n{% endif %}", 2, 4, "unexpected '{% endif %}': no block is open")]
    [InlineData("{{ x", 1, 1, "'{{' is never closed (missing '}}')")]
    [InlineData("a\n{% if x", 2, 1, "'{%' is never closed (missing '%}')")]
    [InlineData("{# note", 1, 1, "the comment is never closed (missing '#}')")]
    [InlineData("{{ 'abc }}", 1, 4, "the string is never closed")]
    [InlineData("{{ f(x }}", 1, 8, "unexpected '}', expected ')'")]
    [InlineData("{{ 1 + }}", 1, 8, "unexpected '}}'")]
    [InlineData("{{ a b }}", 1, 6, "expected '}}', found 'b'")]
    [InlineData("{% break %}", 1, 4, "'break' outside a for loop")]
    [InlineData("{% for x in y %}{% generation %}{% continue %}{% endgeneration %}{% endfor %}", 1, 36, "'continue' outside a for loop")]
    [InlineData("{% set none = 1 %}", 1, 8, "cannot assign to 'none'")]
    [InlineData("{{ 'x' | }}", 1, 10, "expected a filter name after '|', found '}}'")]
    [InlineData("{{ x ? y }}", 1, 6, "unexpected character '?'")]
    [InlineData("{{ 99999999999999999999 }}", 1, 4, "the integer 99999999999999999999 is too large")]
    public void SyntaxErrorsNameLineAndColumn(string template, int line, int column, string problem)
    {
        var e = ParseError(template);
        Assert.Equal((line, column, problem), (e.Line, e.Column, e.Problem));
    }

    [Theory]
    [InlineData("{{ ", "(", "1", ")", " }}")]
    [InlineData("{{ ", "not ", "1", "", " }}")]
    [InlineData("{{ ", "-", "1", "", " }}")]
    [InlineData("{{ ", "[", "1", "]", " }}")]
    [InlineData("", "{% if true %}", "x", "{% endif %}", "")]
    public void DeepNestingIsRefusedRatherThanOverflowingTheStack(string before, string open, string inner, string close, string after)
    {
        string template = before + string.Concat(Enumerable.Repeat(open, 5000)) + inner + string.Concat(Enumerable.Repeat(close, 5000)) + after;
        Assert.Equal("the template nests more than 100 levels deep", ParseError(template).Problem);
        template = before + string.Concat(Enumerable.Repeat(open, 50)) + inner + string.Concat(Enumerable.Repeat(close, 50)) + after;
        ChatTemplate.Parse(template).Render([]);
    }

    [Fact]
    public void AVeryLongChainFailsCleanly()
    {
        var template = ChatTemplate.Parse("{{ 0" + string.Concat(Enumerable.Repeat(" + 1", 1_000_000)) + " }}");
        Assert.Equal("the expression is nested too deeply to evaluate", Assert.Throws<ChatTemplateException>(() => template.Render([])).Problem);
        Assert.Equal("300", ChatTemplate.Parse("{{ 0" + string.Concat(Enumerable.Repeat(" + 1", 300)) + " }}").Render([]));
    }

    [Fact]
    public void RaiseExceptionSurfacesTheTemplatesMessageWhereItWasCalled()
    {
        var template = ChatTemplate.Parse("{% for m in messages %}\n{% if m.role == 'tool' %}\n  {{ raise_exception('Tool messages need a tool_call_id, got: ' ~ m.content) }}\n{% endif %}\n{% endfor %}", Origin);
        Assert.Equal("", template.Render([new("user", "hi")]));
        var e = Assert.Throws<ChatTemplateException>(() => template.Render([new("user", "hi"), new("tool", "42")]));
        Assert.Equal("Tool messages need a tool_call_id, got: 42", e.Problem);
        Assert.Equal($"{Origin} line 3, column 6: Tool messages need a tool_call_id, got: 42", e.Message);
    }

    [Fact]
    public void RenderErrorsPointAtTheFailingExpression()
    {
        var template = ChatTemplate.Parse("{{ bos_token }}\n{{ messages[0]['role'] }}", Origin);
        var e = Assert.Throws<ChatTemplateException>(() => template.Render([], variables: new Dictionary<string, object?> { ["bos_token"] = "<s>" }));
        Assert.Equal((2, 15, "list object has no element 0"), (e.Line, e.Column, e.Problem));
        e = Assert.Throws<ChatTemplateException>(() => ChatTemplate.Parse("{% set n = 1 %}{% set n.x = 2 %}").Render([]));
        Assert.Equal("chat template line 1, column 19: cannot assign attribute on non-namespace object ('n' is of type int)", e.Message);
    }
}
