using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tests.ChatTemplates;

/// <summary>Finding a model folder's chat template and special tokens as transformers does, and what Render accepts.</summary>
public class ChatTemplateLoadTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static readonly ChatTurn[] Hi = [new("user", "Hi")];

    [Fact]
    public void LoadsTheStringInTokenizerConfig()
    {
        string config = _dir.File("tokenizer_config.json", """{"eos_token": "</s>", "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}"}""");
        var template = ChatTemplate.Load(_dir.Path)!;
        Assert.Equal($"{config}: chat_template", template.Origin);
        Assert.Equal("<user>Hi</s>", template.Render(Hi, variables: ChatTemplate.SpecialTokens(_dir.Path)));
    }

    [Fact]
    public void UsesTheDefaultOfNamedTemplatesOrTheOneAskedFor()
    {
        string config = _dir.File("tokenizer_config.json", """
            {"chat_template": [{"name": "tool_use", "template": "tools:{{ tools|length }}"}, {"name": "default", "template": "plain"}]}
            """);
        Assert.Equal("plain", ChatTemplate.Load(_dir.Path)!.Render(Hi));
        var tools = ChatTemplate.Load(_dir.Path, "tool_use")!;
        Assert.Equal($"{config}: chat_template 'tool_use'", tools.Origin);
        Assert.Equal("tools:2", tools.Render(Hi, variables: new Dictionary<string, object?> { ["tools"] = new[] { "a", "b" } }));
        Assert.Contains("no chat template is named 'rag'; the folder has 'tool_use', 'default'.",
            Assert.Throws<InvalidDataException>(() => ChatTemplate.Load(_dir.Path, "rag")).Message);

        _dir.File("tokenizer_config.json", """{"chat_template": [{"name": "tool_use", "template": "x"}]}""");
        Assert.Contains("no chat template is named 'default'; the folder has 'tool_use'. Pass the name of the one to use.",
            Assert.Throws<InvalidDataException>(() => ChatTemplate.Load(_dir.Path)).Message);
    }

    [Fact]
    public void ChatTemplateJinjaTakesPrecedenceAndLosesItsTrailingNewline()
    {
        _dir.File("tokenizer_config.json", """{"chat_template": "from the config"}""");
        string file = _dir.File(ChatTemplate.TemplateFile, "{% for m in messages %}\n{{ m.content }}\n{% endfor %}\n");
        var template = ChatTemplate.Load(_dir.Path)!;
        Assert.Equal(file, template.Origin);
        Assert.Equal("Hi\n", template.Render(Hi));
        Assert.EndsWith("{% endfor %}\n", template.Source);
    }

    [Fact]
    public void AFolderWithoutATemplateGivesNull()
    {
        Assert.Null(ChatTemplate.Load(_dir.Path));
        _dir.File("tokenizer_config.json", """{"eos_token": "</s>"}""");
        Assert.Null(ChatTemplate.Load(_dir.Path));
        _dir.File("tokenizer_config.json", """{"chat_template": null}""");
        Assert.Null(ChatTemplate.Load(_dir.Path));
    }

    [Fact]
    public void BadConfigsAndTemplatesNameTheFile()
    {
        string config = _dir.File("tokenizer_config.json", """{"chat_template": """);
        Assert.Contains("tokenizer_config.json:1: malformed tokenizer config", Assert.Throws<DataFileException>(() => ChatTemplate.Load(_dir.Path)).Message);
        _dir.File("tokenizer_config.json", """{"chat_template": 3}""");
        Assert.Equal($"{config}: \"chat_template\" must be a string or a list of {{\"name\", \"template\"}} objects.",
            Assert.Throws<InvalidDataException>(() => ChatTemplate.Load(_dir.Path)).Message);
        _dir.File("tokenizer_config.json", """{"chat_template": "{{ m|wordcount }}"}""");
        Assert.Equal($"{config}: chat_template line 1, column 6: filter 'wordcount' is not supported",
            Assert.Throws<ChatTemplateException>(() => ChatTemplate.Load(_dir.Path)).Message);
    }

    [Fact]
    public void SpecialTokensComeFromTokenizerConfigThenSpecialTokensMap()
    {
        _dir.File("tokenizer_config.json", """
            {"bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": false}, "eos_token": "</s>", "pad_token": null, "unk_token": "",
             "additional_special_tokens": ["<|im_start|>", {"content": "<|im_end|>"}]}
            """);
        _dir.File("special_tokens_map.json", """{"eos_token": "<ignored>", "sep_token": "<sep>"}""");
        var tokens = ChatTemplate.SpecialTokens(_dir.Path);
        Assert.Equal(["additional_special_tokens", "bos_token", "eos_token", "sep_token"], tokens.Keys.Order());
        Assert.Equal(("<s>", "</s>", "<sep>"), (tokens["bos_token"], tokens["eos_token"], tokens["sep_token"]));
        Assert.Equal(["<|im_start|>", "<|im_end|>"], (IEnumerable<string>)tokens["additional_special_tokens"]!);
        Assert.Equal("<s>|</s>|<sep>|[]|<|im_end|>",
            ChatTemplate.Parse("{{ bos_token }}|{{ eos_token }}|{{ sep_token }}|[{{ unk_token }}]|{{ additional_special_tokens|last }}").Render(Hi, variables: tokens));
    }

    [Fact]
    public void RenderTakesDotNetAndJsonValues()
    {
        var variables = new Dictionary<string, object?>
        {
            ["count"] = 41,
            ["ratio"] = 0.5f,
            ["names"] = new List<string> { "a", "b" },
            ["scores"] = new Dictionary<string, int> { ["x"] = 1 },
            ["node"] = JsonNode.Parse("""{"list": [1, 2.0, "three", null, true]}"""),
            ["element"] = JsonDocument.Parse("""{"k": "v"}""").RootElement,
            ["turn"] = new ChatTurn("tool", "done"),
        };
        var template = ChatTemplate.Parse("{{ count + 1 }} {{ ratio }} {{ names|join(',') }} {{ scores.x }} {{ node.list }} {{ element.k }} {{ turn.role }}:{{ turn.content }} {{ add_generation_prompt }}");
        Assert.Equal("42 0.5 a,b 1 [1, 2.0, 'three', None, True] v tool:done True", template.Render(Hi, addGenerationPrompt: true, variables));

        Assert.Contains("'messages' is set by Render's own parameters",
            Assert.Throws<ArgumentException>(() => template.Render(Hi, variables: new Dictionary<string, object?> { ["messages"] = "x" })).Message);
        Assert.Contains("variable 'when': a DateTime cannot be a template value",
            Assert.Throws<ArgumentException>(() => template.Render(Hi, variables: new Dictionary<string, object?> { ["when"] = DateTime.Now })).Message);
    }

    [Fact]
    public void ATemplateRendersTheSameTextEveryTimeAndFromSeveralThreads()
    {
        // Parsed once, rendered many times: the parsed template holds no render state.
        var template = ChatTemplate.Parse(ModelStyleTemplates.Tools);
        string first = template.Render(ModelStyleTemplates.ToolConversations[0], addGenerationPrompt: true);
        var texts = Enumerable.Range(0, 8).AsParallel().Select(_ => template.Render(ModelStyleTemplates.ToolConversations[0], addGenerationPrompt: true)).ToList();
        Assert.All(texts, t => Assert.Equal(first, t));
    }
}
