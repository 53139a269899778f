using MLNetFinetune.ChatTemplates;

namespace MLNetFinetune.Tests.ChatTemplates;

/// <summary>
/// Chat templates written for these tests in the style of the ones model families publish (their formats, their Jinja
/// idioms and whitespace habits), and the conversations they are rendered with.
/// </summary>
public static class ModelStyleTemplates
{
    /// <summary>ChatML as SmolLM2 and Qwen2 write it: one line, a default system prompt when the first message is not one.</summary>
    public const string ChatML =
        """{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a concise assistant for questions about ML.NET.<|im_end|>\n' }}{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}""";

    /// <summary>
    /// Llama 3: headers, trimmed content, the bos_token before the first message only (a set inside an if inside the
    /// loop, which must stay visible to the rest of that iteration), laid out on indented lines.
    /// </summary>
    public const string Llama3 = """
        {% set loop_messages = messages %}
        {% for message in loop_messages %}
            {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' %}
            {% if loop.index0 == 0 %}
                {% set content = bos_token + content %}
            {% endif %}
            {{- content -}}
        {% endfor %}
        {% if add_generation_prompt %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
        {% endif %}
        """;

    /// <summary>
    /// Zephyr and TinyLlama: "&lt;|role|&gt;\n" + content + eos_token, then the newline after each output tag, which
    /// trim_blocks and lstrip_blocks leave alone; an unknown role is refused.
    /// </summary>
    public const string Zephyr = """
        {% for message in messages %}
        {% set role = message['role'] %}
        {% if role not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('Unknown role: ' ~ role) }}
        {% endif %}
        {{ '<|' + role + '|>\n' + message['content'] + eos_token }}
        {% if loop.last and add_generation_prompt %}
        {{ '<|assistant|>' }}
        {% endif %}
        {% endfor %}
        """;

    /// <summary>Llama 2: [INST] turns, the system prompt folded into the first one in &lt;&lt;SYS&gt;&gt;, alternation enforced.</summary>
    public const string Llama2 = """
        {% if messages[0]['role'] == 'system' %}
            {% set loop_messages = messages[1:] %}
            {% set system_message = messages[0]['content'] %}
        {% else %}
            {% set loop_messages = messages %}
            {% set system_message = false %}
        {% endif %}
        {% for message in loop_messages %}
            {% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
                {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}
            {% endif %}
            {% if loop.index0 == 0 and system_message != false %}
                {% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}
            {% else %}
                {% set content = message['content'] %}
            {% endif %}
            {% if message['role'] == 'user' %}
                {{- bos_token + '[INST] ' + content.strip() + ' [/INST]' -}}
            {% elif message['role'] == 'assistant' %}
                {{- ' ' + content.strip() + ' ' + eos_token -}}
            {% endif %}
        {% endfor %}
        """;

    /// <summary>
    /// Qwen2.5/Qwen3 style: tools as JSON lines, consecutive tool results grouped into one user turn (loop.first,
    /// loop.last, the neighbours by index), a namespace carrying the last user turn out of a reversed loop, reasoning
    /// stripped from assistant turns before it, transformers' generation block, and an enable_thinking switch.
    /// </summary>
    public const string Tools = """
        {%- set ns = namespace(system='', last_user=-1) %}
        {%- if messages and messages[0].role == 'system' %}
            {%- set ns.system = messages[0].content %}
            {%- set conversation = messages[1:] %}
        {%- else %}
            {%- set conversation = messages %}
        {%- endif %}
        {%- for message in conversation[::-1] %}
            {%- if ns.last_user == -1 and message.role == 'user' %}
                {%- set ns.last_user = conversation | length - 1 - loop.index0 %}
            {%- endif %}
        {%- endfor %}
        {{- '<|im_start|>system\n' + (ns.system or 'You are a helpful assistant.') }}
        {%- if tools %}
            {{- '\n\n# Tools\n\nFunction signatures, one per line, inside <tools></tools>:\n<tools>' }}
            {%- for tool in tools %}
                {{- '\n' + tool | tojson }}
            {%- endfor %}
            {{- '\n</tools>\n\nAnswer a call as <tool_call>{"name": ..., "arguments": ...}</tool_call>.' }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
        {%- for message in conversation %}
            {%- if message.role == 'tool' %}
                {%- if loop.first or conversation[loop.index0 - 1].role != 'tool' %}
                    {{- '<|im_start|>user' }}
                {%- endif %}
                {{- '\n<tool_response>\n' + message.content.strip() + '\n</tool_response>' }}
                {%- if loop.last or conversation[loop.index0 + 1].role != 'tool' %}
                    {{- '<|im_end|>\n' }}
                {%- endif %}
            {%- elif message.role == 'assistant' %}
                {%- set content = message.content %}
                {%- if loop.index0 < ns.last_user and '</think>' in content %}
                    {%- set content = content.split('</think>')[-1].lstrip('\n') %}
                {%- endif %}
                {{- '<|im_start|>assistant\n' }}
                {%- generation %}
                {{- content + '<|im_end|>' }}
                {%- endgeneration %}
                {{- '\n' }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
            {%- if enable_thinking is defined and enable_thinking is false %}
                {{- '<think>\n\n</think>\n\n' }}
            {%- endif %}
        {%- endif %}
        """;

    public const string ToolSchemas = """
        {"tools": [
          {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city: «Zürich», \"Tōkyō\" or 北京",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 1e16},
              "unit": {"enum": ["celsius", "fahrenheit"], "default": null}, "threshold": {"type": "number", "default": 0.5, "epsilon": 1e-7}},
              "required": ["city"], "additionalProperties": false}}},
          {"type": "function", "function": {"name": "now", "description": "", "parameters": {}}}
        ]}
        """;

    static ChatTurn System(string text) => new("system", text);
    static ChatTurn User(string text) => new("user", text);
    static ChatTurn Assistant(string text) => new("assistant", text);

    /// <summary>Conversations every template is rendered with: with and without a system prompt, several turns, text that
    /// is hard to carry through (non-ASCII, quotes, backslashes, Jinja delimiters, CRLF, padding), empty texts, none.</summary>
    public static readonly IReadOnlyList<ChatTurn[]> Conversations =
    [
        [User("What is the capital of Chile?")],
        [System("Answer in one word."), User("What is the capital of Peru?")],
        [System("Answer in one word."), User("Capital of Peru?"), Assistant("Lima"), User("And of Chile?")],
        [User("Hi"), Assistant("Hello! How can I help?"), User("Tell me a joke."), Assistant("Why did the tensor break up? It lost its shape.")],
        [System("  Padded system prompt\twith a tab  \n"),
            User("Ünïcödé — 你好 😀 \"double\" 'single' \\backslash {{ not a tag }} {% neither %} {# nor #}\r\nsecond line\n"),
            Assistant("It's \"fine\": <|im_end|> inside text.\n\n")],
        [User(""), Assistant(""), User("")],
        [Assistant("I speak first."), User("Then I answer.")],
        [],
    ];

    /// <summary>Tool-use conversations for <see cref="Tools"/>: consecutive tool results, reasoning in assistant turns.</summary>
    public static readonly IReadOnlyList<ChatTurn[]> ToolConversations =
    [
        [User("Weather in Zürich?"), Assistant("<think>\nNeed the tool.\n</think>\n\n<tool_call>{\"name\": \"get_weather\"}</tool_call>"),
            new("tool", "  {\"temp\": 21}  "), new("tool", "{\"wind\": \"calm\"}"), Assistant("21 °C and calm."), User("Tomorrow?")],
        [System("Use tools when needed."), User("Time?"), Assistant("<tool_call>{\"name\": \"now\"}</tool_call>"), new("tool", "12:00")],
        [new("tool", "orphan result"), User("What was that?"), Assistant("<think>old reasoning</think>kept?")],
    ];
}
