using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace MLNetFinetune.Data;

/// <summary>
/// Finding prompt formats by name or file, and recording them in a model folder: <c>prompt_format.json</c> (read by
/// every runtime of this project) and a <c>chat_template</c> in <c>tokenizer_config.json</c>, so Hugging Face's
/// <c>apply_chat_template</c> renders the same text the model was trained on.
/// </summary>
public static class PromptFormats
{
    /// <summary>The file a model folder records its prompt format in.</summary>
    public const string FormatFile = "prompt_format.json";

    /// <summary>Hugging Face's tokenizer settings file, which carries the chat template.</summary>
    public const string TokenizerConfigFile = "tokenizer_config.json";

    /// <summary>
    /// A built-in format by name (<c>qa</c>, <c>qa-inline</c>, <c>alpaca</c>, <c>prompt-completion</c>) or a JSON file
    /// written like <c>prompt_format.json</c>: <c>{"prompt": "### Q: {question}\n### A:", "response": " {answer}"}</c>.
    /// </summary>
    public static PromptFormat Resolve(string nameOrFile)
    {
        var builtIn = PromptTemplates.BuiltIn.FirstOrDefault(f => f.Name.Equals(nameOrFile, StringComparison.OrdinalIgnoreCase));
        if (builtIn != null) return builtIn;
        if (!File.Exists(nameOrFile))
            throw new ArgumentException($"Unknown prompt format '{nameOrFile}': use {string.Join(", ", PromptTemplates.BuiltIn.Select(f => f.Name))} or the path of a JSON file with \"prompt\" and \"response\".");
        return Read(nameOrFile);
    }

    /// <summary>The format recorded in a model folder, or null when it has none (a base model, a downloaded folder).</summary>
    public static PromptFormat? Load(string directory)
    {
        string path = Path.Combine(directory, FormatFile);
        return File.Exists(path) ? Read(path) : null;
    }

    /// <summary>Writes <c>prompt_format.json</c> and the chat template into <c>tokenizer_config.json</c> (kept otherwise).</summary>
    public static void Save(PromptFormat format, string directory, string? eosToken)
    {
        Directory.CreateDirectory(directory);
        var node = new JsonObject { ["name"] = format.Name, ["prompt"] = format.Prompt.Text, ["response"] = format.Response.Text };
        if (format.Prompt.WhenEmptyTemplate is { } alternative)
            node["prompt_when_empty"] = new JsonObject { ["field"] = format.Prompt.WhenEmptyColumn, ["prompt"] = alternative.Text };
        DataFiles.WriteJson(Path.Combine(directory, FormatFile), node);

        string configPath = Path.Combine(directory, TokenizerConfigFile);
        var config = File.Exists(configPath) ? JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? new JsonObject() : new JsonObject();
        if (ChatTemplate(format) is { } template) config["chat_template"] = template;
        else config.Remove("chat_template");
        if (eosToken != null) config["eos_token"] = eosToken;
        DataFiles.WriteJson(configPath, config);
    }

    /// <summary>Copies a model folder's recorded format (and chat template) to another folder, if it has one.</summary>
    public static void Copy(string fromDirectory, string toDirectory)
    {
        foreach (string file in new[] { FormatFile, TokenizerConfigFile })
        {
            string source = Path.Combine(fromDirectory, file);
            if (File.Exists(source)) DataFiles.WriteAtomically(Path.Combine(toDirectory, file), s => { using var input = File.OpenRead(source); input.CopyTo(s); });
        }
    }

    /// <summary>
    /// The format as a Jinja chat template: a user message fills the prompt's one field (the variant where the other
    /// fields are empty), an assistant message the response part, followed by end of text as in training. Null when
    /// the prompt has more than one field to fill.
    /// </summary>
    public static string? ChatTemplate(PromptFormat format)
    {
        var prompt = format.ChatPrompt;
        if (prompt.Placeholders.Count != 1 || format.Response.Placeholders.Count != 1) return null;
        var (userBefore, userAfter) = Around(prompt);
        var (replyBefore, replyAfter) = Around(format.Response);
        return "{% for message in messages %}"
            + "{% if message['role'] == 'user' %}" + Literal(userBefore) + "{{ message['content'] }}" + Literal(userAfter)
            + "{% elif message['role'] == 'assistant' %}" + Literal(replyBefore) + "{{ message['content'] }}" + Literal(replyAfter) + "{{ eos_token }}"
            + "{% endif %}{% endfor %}";
    }

    // The literal text before and after a one-placeholder template's field.
    static (string Before, string After) Around(PromptTemplate template)
    {
        const string marker = "\u0001";
        string text = template.Format(_ => marker.AsMemory());
        int at = text.IndexOf(marker, StringComparison.Ordinal);
        return (text[..at], text[(at + 1)..]);
    }

    // A Jinja string expression for literal text (no literal is parsed as Jinja syntax).
    static string Literal(string text)
    {
        if (text.Length == 0) return "";
        var sb = new StringBuilder("{{ '");
        foreach (char c in text)
            sb.Append(c switch { '\\' => "\\\\", '\'' => "\\'", '\n' => "\\n", '\r' => "\\r", '\t' => "\\t", _ => c.ToString() });
        return sb.Append("' }}").ToString();
    }

    static PromptFormat Read(string path)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path));
        }
        catch (JsonException e)
        {
            throw DataFileException.MalformedJson(path, "prompt format", e);
        }
        if (root is not JsonObject) throw new InvalidDataException($"{path}: a prompt format is a JSON object with \"prompt\" and \"response\".");
        string Text(JsonNode? node, string key) => node?[key] is JsonValue v && v.TryGetValue(out string? value) && value.Length > 0 ? value
            : throw new InvalidDataException($"{path}: \"{key}\" must be a non-empty string.");
        try
        {
            var prompt = new PromptTemplate(Text(root, "prompt"));
            if (root!["prompt_when_empty"] is JsonObject alternative) prompt = prompt.WhenEmpty(Text(alternative, "field"), Text(alternative, "prompt"));
            var response = new PromptTemplate(Text(root, "response"));
            if (response.Placeholders.Count != 1)
                throw new InvalidDataException($"{path}: \"response\" must have exactly one {{field}} placeholder (the answer); \"{response.Text}\" has {response.Placeholders.Count}.");
            string name = root["name"] is JsonValue n && n.TryGetValue(out string? given) ? given : Path.GetFileNameWithoutExtension(path);
            return new PromptFormat(name, prompt, response);
        }
        catch (FormatException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);
        }
    }
}
