using MLNetFinetune.ChatTemplates;

namespace MLNetFinetune.Tests.ChatTemplates;

/// <summary>
/// The parts of Jinja2 chat templates depend on, each checked against Jinja2 itself on small templates: whitespace
/// control, trim_blocks and lstrip_blocks; Python's values, operators, filters, tests and methods; scoping; and the
/// renders that must fail.
/// </summary>
public class JinjaSemanticsTests
{
    static readonly ChatTurn[] Messages = [new("system", "Be brief."), new("user", "banana"), new("assistant", "A yellow fruit.")];

    const string Variables = """
        {"s": "  Hello, World  ", "n": 7, "f": 2.5, "lst": [3, 1, 2], "nothing": null, "flag": true,
         "d": {"b": 1, "a": [1, 2], "items": "a key named items"}, "emoji": "a😀b", "unicode": "Ünï \"q\" é",
         "bos_token": "<s>", "eos_token": "</s>"}
        """;

    static void AssertSameAsJinja(string name, params string[] templates) =>
        JinjaReference.AssertSameAsJinja(templates.Select((t, i) => new RenderCase(t, Messages, AddGenerationPrompt: true, Variables) { Name = $"{name} {i}: {JinjaReference.Show(t)}" }).ToList());

    [JinjaFact]
    public void WhitespaceControlTrimBlocksAndLstripBlocksMatchJinja() => AssertSameAsJinja("whitespace",
        "{% if true %}\nyes\n{% endif %}\nafter",
        "  {% if true %}\n  yes\n  {% endif %}\n",
        "{% if true %}  \nyes{% endif %}",
        "a  {%- if true %}b{% endif -%}  \n  c",
        "a\n  {%+ if true %}b{% endif +%}\nc",
        "a\n  {{ 'x' }}\n  {# comment #}\n  b\n",
        "a {# c #} b\n{#- c -#}\n c",
        "a\n  {#+ kept indent #}\nb",
        "line1\r\nline2\r\n{% if true %}\r\n  x\r\n{% endif %}\r\n  {{ 'y' }}\rz",
        "\t{% for i in [1, 2] %}\n\t{{ i }}\n\t{% endfor %}\n",
        "{% for i in [1, 2] -%}\n   {{ i }}\n{%- endfor %}",
        "text\n\n",
        "text\n",
        "{{ 'a' }}\n{{ 'b' }}\n",
        "  \n  {% set x = 1 %}\n{{ x }}",
        "{%- if true -%}\n\n  x  \n\n{%- endif -%}",
        "a{{- ' b ' -}}c|a {{- ' b ' -}} c|a  {{+ 'b' }}",
        "x   {% if true %}y{% endif %}",
        "\u00a0\u3000{% if true %}nbsp{% endif %}",
        "\u001c{% if true %}x{% endif %}\n\u0085{% if true %}y{% endif %}",
        "a\n  {# multi\nline #}\nb",
        "  {{- 'x' }}",
        "{%- for m in messages -%}\n  [{{ m.role }}]\n{%- endfor -%}\n",
        "{% if false %}\n  a\n{% else %}\n  b\n{% endif %}\n",
        "{% if true %}{% if true %}\n    nested\n    {% endif %}\n{% endif %}",
        "{{ '{{' }} {{ '}}' }} {{ '{%' }} {{ \"%}\" }} {# {{ #}",
        "{{ {'a': {'b': 1}} }}|{{ {'a': {'b': 1}}['a']['b'] }}",
        "{%- set x = 1 -%}\n\n\n{{ x }}\n\n",
        "{% if true %}\n\n{% endif %}\n",
        "trailing {% if true %}x{% endif %}   \n   ");

    [JinjaFact]
    public void LiteralsAndPrintedValuesMatchPython() => AssertSameAsJinja("values",
        "{{ 1 }} {{ 1.0 }} {{ 1.50 }} {{ 1e3 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1e15 }} {{ 1e-5 }} {{ 0.0001 }} {{ 123456789012345678 }} {{ -0.0 }} {{ 1_000 }} {{ 2.5e-3 }} {{ 1/3 }}",
        "{{ true }} {{ True }} {{ false }} {{ none }} {{ None }} {{ [1, 'a', none, true, 2.5] }} {{ ('x',) }} {{ () }} {{ (1, 2) }} {{ {'k': 'v', 'q': \"it's\"} }} {{ [] }} {{ {} }}",
        """{{ ['a\'b', 'a"b', 'a\'"b', 'tab\there', 'nl\n', 'é', '\x01', '\x7f', '\u2028', '\u00a0', '😀', '\\'] }}""",
        """{{ 'a\tb' }}|{{ "q\"q" }}|{{ 'x\\y' }}|{{ '\u00e9\x41\101\0' }}|{{ 'unknown \d escape' }}|{{ 'adjacent' " strings" }}""",
        "{{ 'multi\nline' }}|{{ 'line \\\ncontinued' }}",
        "{{ 1 ~ none ~ true ~ 2.0 ~ [1, 'x'] ~ {'a': none} ~ undefined_name ~ d }}",
        "{{ {'a': 1, 'b': 2, 'a': 3} }} {{ [s, n, f, lst, nothing, flag, d] }}",
        "{% set ns = namespace(a=1, b='x') %}{{ ns }}|{% set ns.a = ns.a + 1 %}{{ ns.a }}|{% set ns2 = namespace(d, c=3) %}{{ ns2.b }}{{ ns2.c }}",
        "{% for x in 'ab' %}{{ loop }}{% endfor %}",
        "{{ tools }} {{ documents }} {{ tools is none }} {{ tools is defined }} {{ add_generation_prompt }} {{ bos_token }}");

    [JinjaFact]
    public void OperatorsAndPrecedenceMatchPython() => AssertSameAsJinja("operators",
        "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 7 / 2 }} {{ 6 / 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 2 ** 3 ** 2 }} {{ 2 ** 0.5 }}",
        "{{ 7.5 % 2 }} {{ -7.5 // 2 }} {{ -7.5 % 2 }} {{ 7 // 2.0 }} {{ 1 + true }} {{ true + true }} {{ 'ab' * 3 }} {{ [0] * 2 }} {{ 3 * 'x' }} {{ 'x' * 0 }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ (1,) + (2,) }}",
        "{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ -2 ** 2 }} {{ not 1 == 2 }} {{ 1 ~ 2 + 3 }} {{ 'a' ~ 1 + 2 }} {{ 2 * 3 ~ 4 }} {{ -n }} {{ +n }} {{ - - n }} {{ 10 - 2 - 3 }} {{ 100 / 10 / 5 }}",
        "{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 1 == true }} {{ 0 == false }} {{ 'a' < 'b' }} {{ 'B' < 'a' }} {{ [1, 2] < [1, 3] }} {{ [1] < [1, 0] }} {{ 'a' != 'a' }} {{ none == none }} {{ none == false }} {{ (1, 2) == [1, 2] }} {{ [1, [2]] == [1, [2]] }} {{ {'a': 1} == {'a': 1.0} }} {{ 2 >= 2.0 }} {{ 'é' > 'z' }}",
        "{{ 'b' in 'abc' }} {{ '' in 'abc' }} {{ 2 not in [1, 2] }} {{ 1.0 in [1] }} {{ 'a' in d }} {{ 'z' in d }} {{ 'a' in ['a', 'b'] }} {{ [1] in [[1]] }} {{ 'x' in undefined_name }} {{ 'role' in messages[0] }}",
        "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 'b' }} {{ nothing or 'default' }} {{ undefined_name or 'u' }} {{ not undefined_name }} {{ [] or {} }} {{ 0.0 or 'zero' }} {{ lst and lst[0] }} {{ not not 'x' }}",
        "{{ 'yes' if flag else 'no' }} {{ 'yes' if nothing else 'no' }} [{{ 'yes' if nothing }}] {{ 'a' if false else 'b' if true else 'c' }} {{ (n if n > 5 else 0) + 1 }} {{ 'x' ~ ('y' if false) ~ 'z' }}");

    [JinjaFact]
    public void UndefinedBehavesAsJinjasDefault() => AssertSameAsJinja("undefined",
        "[{{ undefined_name }}] [{{ d.missing }}] [{{ d['missing'] }}] [{{ lst[10] }}] [{{ lst[-10] }}] [{{ messages[5] }}] [{{ nothing.attribute }}] [{{ nothing[0] }}] [{{ n.attribute }}] [{{ s.missing }}]",
        "[{{ undefined_name|length }}] [{{ undefined_name is defined }}] [{{ d.missing is undefined }}] [{{ undefined_name ~ 'x' }}] [{{ undefined_name|default('dflt') }}] [{{ nothing|default('dflt') }}] [{{ ''|default('dflt', true) }}] [{{ ''|d('dflt', boolean=true) }}]",
        "[{% for x in undefined_name %}{{ x }}{% endfor %}] [{{ undefined_name|join(',') }}] [{{ undefined_name == undefined_other }}] [{{ undefined_name == none }}] [{{ undefined_name|trim }}] [{{ undefined_name|upper }}] [{{ undefined_name|list }}] [{{ undefined_name|first }}] [{{ undefined_name|items|list }}] [{{ undefined_name|string }}]",
        "[{{ [undefined_name] }}] [{{ undefined_name is sequence }}] [{{ undefined_name is iterable }}] [{{ undefined_name is none }}] [{{ lst[10] is defined }}] [{% if undefined_name %}t{% else %}f{% endif %}] [{{ 'a' if undefined_name else 'b' }}]");

    [JinjaFact]
    public void FiltersMatchJinja() => AssertSameAsJinja("filters",
        "[{{ s|trim }}] [{{ s|trim(' H') }}] [{{ s|length }}] [{{ emoji|length }}] [{{ lst|length }}] [{{ d|length }}] [{{ s|upper }}] [{{ s|lower }}] [{{ unicode|upper }}] [{{ nothing|trim }}] [{{ 5|string|length }}] [{{ lst|count }}]",
        "[{{ lst|join(', ') }}] [{{ lst|join }}] [{{ [1, none, 'x']|join('-') }}] [{{ d|join('|') }}] [{{ 'abc'|join('.') }}] [{{ lst|first }}] [{{ lst|last }}] [{{ s|first }}] [{{ emoji|last }}] [{{ d|first }}] [{{ d|last }}] [{{ []|first }}]",
        "[{{ n|string ~ f|string }}] [{{ '42'|int + 1 }}] [{{ '4.7'|int }}] [{{ ' -12 '|int }}] [{{ '1_000'|int }}] [{{ 'x'|int }}] [{{ 'x'|int(-1) }}] [{{ f|int }}] [{{ -2.7|int }}] [{{ true|int }}] [{{ nothing|int }}] [{{ '0x1A'|int(0, 16) }}] [{{ 'ff'|int(base=16) }}] [{{ '0x_ff'|int(base=16) }}] [{{ '_ff'|int(7, 16) }}] [{{ '0b101'|int(0, 2) }}] [{{ '1__0'|int(3) }}] [{{ '1e3'|int }}]",
        "[{{ '3.5'|float }}] [{{ 'x'|float }}] [{{ 'x'|float(1.5) }}] [{{ n|float }}] [{{ ' 1_0.5 '|float }}] [{{ '-inf'|float }}] [{{ nothing|float }}] [{{ '1e-3'|float }}]",
        "[{{ d|list }}] [{{ s|list|length }}] [{{ emoji|list }}] [{{ d|items|list }}] [{{ s|replace('l', 'L') }}] [{{ s|replace('l', 'L', 2) }}] [{{ 'ab'|replace('', '-') }}] [{{ n|replace('7', 'seven') }}] [{{ nothing|string }}]",
        """{{ d|tojson }}|{{ d|tojson(indent=2) }}|{{ lst|tojson(indent=0) }}|{{ d|tojson(sort_keys=true) }}|{{ d|tojson(separators=(',', ':')) }}|{{ d|tojson(indent=1, separators=(', ', ' = ')) }}""",
        """{{ unicode|tojson }}|{{ unicode|tojson(ensure_ascii=true) }}|{{ emoji|tojson(true) }}|{{ [1.0, 0.1, 1e20, -0.0, none, true, 'a\\"\n\t\x01\x7f\u2028'] | tojson }}|{{ {} | tojson(indent=2) }}{{ [] | tojson(indent='\t') }}|{{ d|tojson(indent='--') }}|{{ messages|tojson }}|{{ (1, 'x')|tojson }}|{{ 'é'|tojson(false, none, none, false) }}""");

    [JinjaFact]
    public void TestsMatchJinja() => AssertSameAsJinja("tests",
        "{{ s is string }} {{ n is number }} {{ n is integer }} {{ f is float }} {{ f is integer }} {{ flag is boolean }} {{ flag is true }} {{ flag is false }} {{ 1 is true }} {{ nothing is none }} {{ d is mapping }} {{ lst is mapping }} {{ lst is sequence }} {{ s is iterable }} {{ n is iterable }}",
        "{{ n is odd }} {{ n is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(4) }} {{ 'a' is in ['a'] }} {{ 'a' is in 'cat' }} {{ n is eq 7 }} {{ n is equalto(7.0) }} {{ n is ne 7 }} {{ n is not string }} {{ nothing is not none }} {{ true is number }} {{ true is integer }} {{ d is sequence }} {{ not s is string }}",
        "{% for m in messages %}{{ m.content is string }}{{ m is mapping }}{% endfor %} {{ 'x' if n is odd and s is string else 'y' }} {{ n is odd or flag }}");

    [JinjaFact]
    public void MethodsAndSubscriptsMatchPython() => AssertSameAsJinja("methods",
        "[{{ s.strip() }}] [{{ s.lstrip() }}] [{{ s.rstrip() }}] [{{ s.strip(' Hd') }}] [{{ s.strip().startswith('Hello') }}] [{{ s.endswith(('x', '  ')) }}] [{{ s.startswith('') }}] [{{ 'x\u3000'.strip() }}] [{{ '\x1fx'.strip() }}]",
        "[{{ s.split() }}] [{{ s.split(',') }}] [{{ 'a,b,,c'.split(',', 1) }}] [{{ ' a  b  '.split(none, 1) }}] [{{ 'a b'.split(' ', 0) }}] [{{ ''.split() }}] [{{ ''.split(',') }}] [{{ 'x</think>y</think>z'.split('</think>')[-1] }}]",
        "[{{ s.upper() }}] [{{ s.lower() }}] [{{ \"they're bill's friends from the UK, 3rd place\".title() }}] [{{ 'hello WORLD'.title() }}] [{{ s.replace('l', '') }}] [{{ s.replace('l', 'L', 1) }}] [{{ 'aaa'.replace('a', 'b', -1) }}]",
        "[{{ d.items() }}] [{{ d.keys() }}] [{{ d.values() }}] [{{ d.get('b') }}] [{{ d.get('zz') }}] [{{ d.get('zz', 'fallback') }}] [{{ d['items'] }}] [{{ d.items is defined }}] [{{ d['get'] is defined }}] [{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}]",
        "[{{ 'a' in d.keys() }}] [{{ d.keys()|list }}] [{{ d.values()|first }}] [{{ d.items()|length }}] [{{ d.keys() == ['b', 'a', 'items'] }}] [{{ d.keys()[0] }}] [{{ d.items() is iterable }}] [{{ d.keys() is sequence }}] [{{ d.keys()|join(',') }}]",
        "{{ lst[0] }} {{ lst[-1] }} {{ lst[1:] }} {{ lst[:-1] }} {{ lst[::-1] }} {{ lst[::2] }} {{ lst[5:] }} {{ lst[-10:2] }} {{ lst[2:0:-1] }} {{ s[2:7] }} {{ emoji[::-1] }} {{ emoji[1] }} {{ emoji[1:] }} {{ 'abc'[1] }} {{ 'abc'[-1] }} {{ lst[true] }}",
        "{{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages[1:]|length }} {{ messages.0.role }} {{ d.a[1] }} {{ d['a'][0] }} {{ (lst + [9])[-1] }} {{ messages[:0] }} {{ messages[1:2][0].content }} {{ lst[n - 6] }} {{ (1, 2, 3)[1:] }}",
        "{{ range(3)|list }} {% for i in range(1, 10, 3) %}{{ i }}{% endfor %} {% for i in range(5, 0, -2) %}{{ i }}{% endfor %} {{ range(0)|length }}");

    [JinjaFact]
    public void ScopingLoopsAndNamespacesMatchJinja() => AssertSameAsJinja("scoping",
        "{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = 2 %}{{ x }}{% endfor %}{{ x }}",
        "{% set x = 1 %}{% for i in [1, 2] %}{% if i == 2 %}{{ x }}{% endif %}{% set x = i * 10 %}{% endfor %}{{ x }}",
        "{% for i in [1, 2] %}{% set y = i * 10 %}{% for j in [1] %}{{ y }}{% set y = 5 %}{{ y }}{% endfor %}{{ y }}{% endfor %}",
        "{% for a in [1, 2] %}{% set outer = loop %}{% for b in 'xy' %}{{ outer.index }}{{ loop.index }}{{ b }} {% endfor %}{% endfor %}",
        "{% for x in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}[{{ loop.previtem }}|{{ loop.nextitem }}] {% endfor %}",
        "{% for x in [] %}x{% else %}empty{% endfor %}|{% for x in [1] %}{{ x }}{% else %}empty{% endfor %}|{% for x in [1, 2] if x > 5 %}{{ x }}{% else %}none kept{% endfor %}",
        "{% for x in range(10) %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 5 %}{% break %}{% endif %}{{ x }}{% endfor %}|{% for x in [1, 2] %}{% for y in [1, 2] %}{% if y == 2 %}{% break %}{% endif %}{{ x }}{{ y }}{% endfor %}{% endfor %}",
        "{% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }}:{{ m.role }}{{ loop.last }} {% endfor %}",
        "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{% for (a, b) in [[1, 2], 'xy'] %}{{ a }}{{ b }}{% endfor %}|{% for a in [[1], [2]] %}{{ a }}{% endfor %}",
        "{% if true %}{% set z = 3 %}{% endif %}{{ z }}|{% for x in [] %}{% else %}{% set w = 1 %}{% endfor %}[{{ w }}]{% for x in [1] %}{% endfor %}[{{ x }}]",
        "{% set ns = namespace(count=0, seen=[]) %}{% for m in messages %}{% for c in m.content %}{% if c == 'a' %}{% set ns.count = ns.count + 1 %}{% endif %}{% endfor %}{% set ns.seen = ns.seen + [m.role] %}{% endfor %}{{ ns.count }} {{ ns.seen }}",
        "{% set messages = messages[1:] %}{{ messages|length }}{% for m in messages %}{{ m.role }}{% endfor %}",
        "{% for a in [1, 2] %}{{ a }}{% for b in [] %}{% else %}{% break %}{% endfor %}{% endfor %}",
        "{% generation %}{% set g = 1 %}{{ g }}{% endgeneration %}[{{ g }}]{% for x in [1] %}{% generation %}{{ loop.index }}{{ x }}{% endgeneration %}{% endfor %}",
        "{% set lst = lst + [4] %}{{ lst }}{% for x in lst %}{% set lst = [] %}{{ x }}{% endfor %}{{ lst }}",
        "{% set pair = 1, 'two' %}{{ pair }} {{ pair[1] }}");

    [JinjaFact]
    public void RendersThatFailInJinjaFailInOurs() => AssertSameAsJinja("failing",
        "{{ messages[5]['role'] }}",
        "{{ d.missing.deeper }}",
        "{{ undefined_name + 1 }}",
        "{{ 1 < 'a' }}",
        "{{ raise_exception('custom message') }}",
        "{{ nothing|length }}",
        "{{ 5 // 0 }}",
        "{{ 5 / 0 }}",
        "{% set x = 1 %}{% set x.y = 2 %}",
        "{{ lst.strip() }}",
        "{{ undefined_name|tojson }}",
        "{% for a, b in [1] %}{% endfor %}",
        "{% for a, b in [[1, 2, 3]] %}{% endfor %}",
        "{% for x in 5 %}{% endfor %}",
        "{{ 'a' + 1 }}",
        "{{ undefined_name.attribute }}",
        "{{ undefined_name() }}",
        "{{ undefined_name|int }}",
        "{{ 1 in 'abc' }}",
        "{{ n|items|list }}",
        "{{ s.split('') }}",
        "{{ range(100001)|length }}",
        "{{ d.items()|tojson }}");

    [JinjaFact]
    public void SyntaxErrorsInJinjaAreErrorsInOurs() => AssertSameAsJinja("syntax",
        "{% if true %}{% endfor %}",
        "{% for x in lst %}",
        "{{ x ",
        "{# never closed",
        "{% break %}",
        "{{ 'abc }}",
        "{{ (1 }}",
        "{{ 1 + }}",
        "{% endif %}",
        "{% if true %}{% else %}{% elif false %}{% endif %}",
        "{% set true = 1 %}",
        "{% for in lst %}{% endfor %}",
        "{% for a, in [[1], [2]] %}{% endfor %}",
        "{% generation %}{% for x in lst %}{% endfor %}",
        "{% for x in lst %}{% generation %}{% break %}{% endgeneration %}{% endfor %}");

    [JinjaFact]
    public void RuntimeErrorsUseJinjasWords()
    {
        var cases = new[]
        {
            "{{ messages[5]['role'] }}", "{{ d.missing.deeper }}", "{{ undefined_name + 1 }}", "{{ raise_exception('Roles must alternate: ' ~ messages|length) }}",
            "{{ 1 < 'a' }}", "{{ nothing|length }}", "{{ nothing.x.y }}", "{{ undefined_name|tojson }}",
        }.Select(t => new RenderCase(t, Messages, false, Variables)).ToList();
        var jinja = JinjaReference.Render(cases);
        for (int i = 0; i < cases.Count; i++)
        {
            var ours = JinjaReference.RenderOurs(cases[i]).Error;
            Assert.NotNull(ours);
            Assert.Equal(jinja[i].Error, ours.Problem);
        }
    }

    [JinjaFact]
    public void StrftimeFormatsAsPythonDoes()
    {
        var formats = new[] { "%d %b %Y", "%A %B %-d %Y %H:%M:%S %p %I %j %y %m %e %a %% %-m/%-H", "%c|%x|%X|%D|%F|%T|%R|%u|%w|[%Z%z]|%h|%Q|%", "%-" };
        var times = new[] { new DateTime(2024, 7, 26, 9, 5, 3), new DateTime(2025, 1, 1), new DateTime(2023, 12, 31, 23, 59, 59), new DateTime(2024, 2, 29, 12, 30, 45) };
        var cases = formats.SelectMany(f => times.Select(t => (f, t))).ToList();
        Assert.Equal(JinjaReference.Strftime(cases), cases.Select(c => Builtins.Strftime(c.t, c.f)));
    }

    [Fact]
    public void StrftimeNowIsTodaysDate()
    {
        // Llama 3.1's templates print today's date unless the caller gives date_string.
        string template = "{{ strftime_now('%d %b %Y') }}";
        var before = DateTime.Now;
        string text = ChatTemplate.Parse(template).Render([]);
        Assert.Contains(text, new[] { before, DateTime.Now }.Select(t => Builtins.Strftime(t, "%d %b %Y")));
    }
}
