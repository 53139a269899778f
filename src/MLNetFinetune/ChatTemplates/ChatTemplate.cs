using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.Data;

namespace MLNetFinetune.ChatTemplates;

/// <summary>One message of a conversation, as chat templates see it: <c>{"role": ..., "content": ...}</c>.</summary>
/// <param name="Role">"system", "user", "assistant" (or "tool", or whatever roles the template knows).</param>
/// <param name="Content">The message text.</param>
public sealed record ChatTurn(string Role, string Content);

/// <summary>
/// A Hugging Face chat template: the Jinja2 text a model folder carries (tokenizer_config.json's <c>chat_template</c>, or
/// <c>chat_template.jinja</c>), rendered into exactly the text transformers' <c>apply_chat_template</c> produces, byte for
/// byte, so a model is prompted as it was trained.
/// </summary>
/// <remarks>
/// The renderer is written here (lexer, parser to a small syntax tree, evaluator) because no Jinja engine is served on
/// NuGet: Fluid, DotLiquid and Scriban implement Liquid, whose syntax and semantics differ. It implements the part of
/// Jinja2 that published chat templates use, with the environment transformers sets up (ImmutableSandboxedEnvironment,
/// trim_blocks, lstrip_blocks, loopcontrols; a <c>tojson</c> that keeps non-ASCII text; globals <c>raise_exception</c> and
/// <c>strftime_now</c>) and Python's semantics for values. Anything outside that part is refused by <see cref="Parse"/>
/// with the template's origin, line and column, rather than rendered differently. Known differences, none in text a
/// chat template prints in practice: upper/lower/title use .NET's simple case mapping (Python upper-cases "ß" to "SS");
/// <c>range(n)</c> and the <c>items</c> filter give lists (Python prints a range or a generator object); integers are
/// 64-bit (an overflow is an error).
/// </remarks>
public sealed class ChatTemplate
{
    /// <summary>The file newer model folders keep the template in, beside tokenizer_config.json; it takes precedence.</summary>
    public const string TemplateFile = "chat_template.jinja";

    // The tokens transformers passes to every template (its special_tokens_map), in tokenizer_config.json's names.
    static readonly string[] SpecialTokenNames = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"];

    readonly IReadOnlyList<Statement> _body;

    ChatTemplate(string source, string origin, IReadOnlyList<Statement> body) => (Source, Origin, _body) = (source, origin, body);

    /// <summary>The template text as given.</summary>
    public string Source { get; }

    /// <summary>Where the template came from, the prefix of every error message ("tokenizer_config.json: chat_template").</summary>
    public string Origin { get; }

    /// <summary>Parses a template; throws <see cref="ChatTemplateException"/> for syntax errors and unsupported features.</summary>
    /// <param name="source">The Jinja2 text.</param>
    /// <param name="origin">Where it came from, for error messages; "chat template" when null.</param>
    public static ChatTemplate Parse(string source, string? origin = null)
    {
        ArgumentNullException.ThrowIfNull(source);
        origin ??= "chat template";
        // As Jinja2 does before lexing: every newline (\r\n, \r, \n; not .NET's wider set) becomes "\n", and one
        // trailing newline is dropped.
        string text = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (text.EndsWith('\n')) text = text[..^1];
        return new ChatTemplate(source, origin, TemplateParser.Parse(TemplateLexer.Tokenize(text, origin), origin));
    }

    /// <summary>
    /// Renders a conversation as <c>apply_chat_template(messages, add_generation_prompt=..., tokenize=False)</c> does:
    /// the template sees <c>messages</c>, <c>add_generation_prompt</c>, <c>tools</c> and <c>documents</c> (None unless
    /// given), and the variables, such as <see cref="SpecialTokens"/>' bos_token and eos_token.
    /// </summary>
    /// <param name="messages">The conversation, oldest first.</param>
    /// <param name="addGenerationPrompt">Whether to end with the start of an assistant turn, for the model to complete.</param>
    /// <param name="variables">Further template variables: strings, numbers, booleans, null, lists, dictionaries with
    /// string keys, or JSON (JsonElement, JsonNode); <c>tools</c> and <c>documents</c> may be given here.</param>
    /// <exception cref="ChatTemplateException">The template failed: it called raise_exception (the message is the
    /// template's), or used a value in a way Python does not allow.</exception>
    public string Render(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = false, IReadOnlyDictionary<string, object?>? variables = null)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var context = new Dictionary<string, object?>
        {
            ["messages"] = Py.FromDotNet(messages, "messages"),
            ["tools"] = null,
            ["documents"] = null,
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        foreach (var (name, value) in variables ?? new Dictionary<string, object?>())
        {
            if (name is "messages" or "add_generation_prompt")
                throw new ArgumentException($"'{name}' is set by Render's own parameters, not by a variable.", nameof(variables));
            context[name] = Py.FromDotNet(value, $"variable '{name}'");
        }
        return TemplateRenderer.Render(_body, Origin, context);
    }

    /// <summary>
    /// The chat template of a model folder, as transformers finds it: <c>chat_template.jinja</c> if present, else
    /// tokenizer_config.json's <c>chat_template</c> (a string, or a list of <c>{"name", "template"}</c> of which
    /// "default" is used). Null when the folder has none (a base model).
    /// </summary>
    /// <param name="modelDirectory">The model folder.</param>
    /// <param name="name">A named template from the list in tokenizer_config.json instead ("tool_use", "rag").</param>
    public static ChatTemplate? Load(string modelDirectory, string? name = null)
    {
        string file = Path.Combine(modelDirectory, TemplateFile);
        if (name == null && File.Exists(file)) return Parse(File.ReadAllText(file), file);

        string configPath = Path.Combine(modelDirectory, PromptFormats.TokenizerConfigFile);
        if (ReadConfig(configPath) is not { } config) return null;
        switch (config["chat_template"])
        {
            case null when name == null:
                return null;
            case JsonValue value when name == null && value.TryGetValue(out string? text):
                return Parse(text, $"{configPath}: chat_template");
            case JsonArray list:
                var named = list.Select(entry => (Name: entry?["name"]?.GetValue<string>(), Template: entry?["template"]?.GetValue<string>())).ToList();
                string wanted = name ?? "default";
                if (named.FirstOrDefault(t => t.Name == wanted).Template is { } template) return Parse(template, $"{configPath}: chat_template '{wanted}'");
                throw new InvalidDataException($"{configPath}: no chat template is named '{wanted}'; the folder has {string.Join(", ", named.Select(t => $"'{t.Name}'"))}"
                    + (name == null ? ". Pass the name of the one to use." : "."));
            case JsonValue when name != null:
            case null:
                throw new InvalidDataException($"{configPath}: there are no named chat templates, so there is none named '{name}'.");
            default:
                throw new InvalidDataException($"{configPath}: \"chat_template\" must be a string or a list of {{\"name\", \"template\"}} objects.");
        }
    }

    /// <summary>
    /// Records this template as the chat template of a model folder: <c>chat_template</c> in tokenizer_config.json (its
    /// other settings kept), and no chat_template.jinja, which would take precedence. <paramref name="specialTokens"/>
    /// (bos_token, eos_token, …) are written beside it, so the folder renders as the data was rendered.
    /// </summary>
    public void Save(string modelDirectory, IReadOnlyDictionary<string, object?>? specialTokens = null)
    {
        Directory.CreateDirectory(modelDirectory);
        string configPath = Path.Combine(modelDirectory, PromptFormats.TokenizerConfigFile);
        var config = ReadConfig(configPath) ?? new JsonObject();
        config["chat_template"] = Source;
        foreach (var (name, value) in specialTokens ?? new Dictionary<string, object?>())
            if (value is string token && !config.ContainsKey(name)) config[name] = token;
        DataFiles.WriteJson(configPath, config);
        File.Delete(Path.Combine(modelDirectory, TemplateFile));
    }

    /// <summary>
    /// The special tokens transformers passes to every template (bos_token, eos_token, unk_token, sep_token, pad_token,
    /// cls_token, mask_token, additional_special_tokens), from tokenizer_config.json and, for those it lacks,
    /// special_tokens_map.json. Tokens written as objects (<c>{"content": "&lt;s&gt;", ...}</c>) give their content; unset or
    /// empty ones are left out, so the template sees them as undefined, as in transformers.
    /// </summary>
    public static IReadOnlyDictionary<string, object?> SpecialTokens(string modelDirectory)
    {
        var tokens = new Dictionary<string, object?>();
        foreach (string file in new[] { PromptFormats.TokenizerConfigFile, "special_tokens_map.json" })
        {
            if (ReadConfig(Path.Combine(modelDirectory, file)) is not { } config) continue;
            foreach (string name in SpecialTokenNames)
                if (!tokens.ContainsKey(name) && TokenText(config[name]) is { Length: > 0 } token) tokens[name] = token;
            if (!tokens.ContainsKey("additional_special_tokens") && config["additional_special_tokens"] is JsonArray extra
                && extra.Select(TokenText).Where(t => !string.IsNullOrEmpty(t)).ToList() is { Count: > 0 } texts)
                tokens["additional_special_tokens"] = texts;
        }
        return tokens;
    }

    static string? TokenText(JsonNode? node) => node switch
    {
        JsonValue value when value.TryGetValue(out string? text) => text,
        JsonObject added when added["content"] is JsonValue content && content.TryGetValue(out string? text) => text,
        _ => null,
    };

    static JsonObject? ReadConfig(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: expected a JSON object.");
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "tokenizer config", e);
        }
    }
}

/// <summary>
/// A chat template that cannot be parsed (a syntax error, or a Jinja2 feature this renderer does not have) or that
/// failed while rendering (it called <c>raise_exception</c>, or used a value in a way Python does not allow). The
/// message reads "origin line L, column C: problem".
/// </summary>
public sealed class ChatTemplateException : Exception
{
    ChatTemplateException(string origin, int line, int column, string problem, Exception? inner)
        : base($"{origin} line {line}, column {column}: {problem}", inner)
    {
        Origin = origin;
        Line = line;
        Column = column;
        Problem = problem;
    }

    internal static ChatTemplateException At(string origin, Position at, string problem, Exception? inner = null) =>
        new(origin, at.Line, at.Column, problem, inner);

    /// <summary>Where the template came from ("tokenizer_config.json: chat_template").</summary>
    public string Origin { get; }

    /// <summary>1-based line in the template.</summary>
    public int Line { get; }

    /// <summary>1-based column in the template.</summary>
    public int Column { get; }

    /// <summary>What is wrong, without the location; for <c>raise_exception(message)</c>, the template's message as is.</summary>
    public string Problem { get; }
}
