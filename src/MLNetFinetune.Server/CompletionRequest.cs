using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.ChatTemplates;

namespace MLNetFinetune.Server;

/// <summary>
/// A <c>/v1/chat/completions</c> or <c>/v1/completions</c> request body, read field by field so every refusal names
/// the field (OpenAI's <c>param</c>). Fields this server cannot honour (several choices, log probabilities, penalties)
/// are refused rather than ignored; fields that do not change the text (<c>user</c>, <c>metadata</c>…) are ignored.
/// </summary>
public sealed record CompletionRequest
{
    /// <summary>The model id asked for.</summary>
    public required string Model { get; init; }

    /// <summary>The conversation (chat) or null.</summary>
    public IReadOnlyList<ChatTurn>? Messages { get; init; }

    /// <summary>The prompt text (completions) or null.</summary>
    public string? Prompt { get; init; }

    /// <summary><c>max_completion_tokens</c> or <c>max_tokens</c>; null: up to the context.</summary>
    public int? MaxTokens { get; init; }

    /// <summary>Sampling temperature, 0–2; OpenAI's default is 1; 0 is greedy.</summary>
    public double Temperature { get; init; } = 1;

    /// <summary>Nucleus sampling threshold in (0, 1].</summary>
    public double TopP { get; init; } = 1;

    /// <summary>Up to four stop strings.</summary>
    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Sampling seed, or null for a fresh one.</summary>
    public int? Seed { get; init; }

    /// <summary>vLLM's <c>ignore_eos</c> extension: generate exactly the token limit (benchmarks, load tests).</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Whether the answer streams as server-sent events.</summary>
    public bool Stream { get; init; }

    /// <summary><c>stream_options.include_usage</c>: a last chunk with the token counts.</summary>
    public bool IncludeUsage { get; init; }

    /// <summary>Reads a body; <paramref name="chat"/> selects chat completions (messages) over completions (prompt).</summary>
    public static CompletionRequest Parse(ReadOnlySpan<byte> body, bool chat)
    {
        JsonNode? root;
        try
        {
            root = JsonNode.Parse(body);
        }
        catch (JsonException e)
        {
            throw new OpenAIError(400, $"The request body is not valid JSON (line {(e.LineNumber ?? 0) + 1}, byte {(e.BytePositionInLine ?? 0) + 1}): {FirstSentence(e.Message)}");
        }
        if (root is not JsonObject json) throw new OpenAIError(400, "The request body must be a JSON object.");

        var request = new CompletionRequest
        {
            Model = RequiredString(json, "model"),
            Messages = chat ? ReadMessages(json) : null,
            Prompt = chat ? null : ReadPrompt(json),
            MaxTokens = OptionalInt(json, "max_completion_tokens", 1) ?? OptionalInt(json, "max_tokens", 1),
            Temperature = OptionalNumber(json, "temperature", 0, 2) ?? 1,
            TopP = OptionalNumber(json, "top_p", 0, 1) ?? 1,
            Stop = ReadStop(json),
            Seed = OptionalSeed(json),
            Stream = OptionalBool(json, "stream") ?? false,
            IgnoreEos = OptionalBool(json, "ignore_eos") ?? false,
            IncludeUsage = json["stream_options"] is JsonObject streamOptions && OptionalBool(streamOptions, "include_usage", "stream_options.include_usage") == true,
        };
        if (request.TopP == 0) throw OpenAIError.Invalid("top_p", "must be greater than 0.");
        if (OptionalInt(json, "n", 1) is > 1) throw OpenAIError.Invalid("n", "this server returns one choice per request; send several requests.");
        // Chat sends logprobs as true/false, completions as a count; either asks for what this server does not compute.
        if (json["logprobs"] is JsonValue logprobs && (logprobs.TryGetValue<bool>(out bool wanted) ? wanted : !logprobs.TryGetValue<int>(out int count) || count > 0))
            throw OpenAIError.Invalid("logprobs", "log probabilities are not supported.");
        foreach (string penalty in new[] { "frequency_penalty", "presence_penalty" })
            if (OptionalNumber(json, penalty, -2, 2) is { } p && p != 0) throw OpenAIError.Invalid(penalty, "penalties are not supported; send 0 or leave it out.");
        if (json["tools"] is JsonArray { Count: > 0 }) throw OpenAIError.Invalid("tools", "tool calls are not supported.");
        return request;
    }

    static IReadOnlyList<ChatTurn> ReadMessages(JsonObject json)
    {
        if (json["messages"] is null) throw OpenAIError.Missing("messages");
        if (json["messages"] is not JsonArray messages) throw OpenAIError.Invalid("messages", "expected an array of messages.");
        if (messages.Count == 0) throw OpenAIError.Invalid("messages", "expected at least one message.");
        var turns = new List<ChatTurn>();
        for (int i = 0; i < messages.Count; i++)
        {
            string at = $"messages[{i}]";
            if (messages[i] is not JsonObject message) throw OpenAIError.Invalid(at, "expected an object with 'role' and 'content'.");
            string role = RequiredString(message, "role", $"{at}.role");
            role = role switch
            {
                "system" or "user" or "assistant" => role,
                "developer" => "system", // OpenAI's newer name for system instructions
                _ => throw OpenAIError.Invalid($"{at}.role", $"'{role}' is not one of 'system', 'developer', 'user', 'assistant'."),
            };
            turns.Add(new ChatTurn(role, ReadContent(message["content"], $"{at}.content")));
        }
        if (!turns.Any(t => t.Role == "user")) throw OpenAIError.Invalid("messages", "the conversation has no user message to answer.");
        return turns;
    }

    // A message's content: a string, or an array of text parts ({"type": "text", "text": …}) as newer clients send.
    static string ReadContent(JsonNode? content, string at)
    {
        switch (content)
        {
            case null: throw OpenAIError.Missing(at);
            case JsonValue value when value.TryGetValue<string>(out var text): return text;
            case JsonArray parts:
                var texts = new List<string>();
                for (int i = 0; i < parts.Count; i++)
                {
                    if (parts[i] is not JsonObject part || part["type"]?.GetValueKind() != JsonValueKind.String)
                        throw OpenAIError.Invalid($"{at}[{i}]", "expected a content part with a 'type'.");
                    if ((string)part["type"]! != "text") throw OpenAIError.Invalid($"{at}[{i}].type", $"'{(string)part["type"]!}' parts are not supported; only 'text'.");
                    texts.Add(RequiredString(part, "text", $"{at}[{i}].text"));
                }
                return string.Concat(texts);
            default: throw OpenAIError.Invalid(at, "expected a string or an array of text parts.");
        }
    }

    // OpenAI accepts a string or a list of prompts; one request here answers one prompt.
    static string ReadPrompt(JsonObject json) => json["prompt"] switch
    {
        null => throw OpenAIError.Missing("prompt"),
        JsonValue value when value.TryGetValue<string>(out var text) => text,
        JsonArray { Count: 1 } one when one[0] is JsonValue first && first.TryGetValue<string>(out var text) => text,
        JsonArray => throw OpenAIError.Invalid("prompt", "send one prompt (a string) per request."),
        _ => throw OpenAIError.Invalid("prompt", "expected a string."),
    };

    static IReadOnlyList<string> ReadStop(JsonObject json)
    {
        var stops = json["stop"] switch
        {
            null => [],
            JsonValue value when value.TryGetValue<string>(out var one) => [one],
            JsonArray many => many.Select((s, i) => s is JsonValue sv && sv.TryGetValue<string>(out var text) ? text : throw OpenAIError.Invalid($"stop[{i}]", "expected a string.")).ToList(),
            _ => throw OpenAIError.Invalid("stop", "expected a string or an array of up to 4 strings."),
        };
        if (stops.Count > 4) throw OpenAIError.Invalid("stop", $"{stops.Count} stop strings; at most 4.");
        if (stops.Any(s => s.Length == 0)) throw OpenAIError.Invalid("stop", "stop strings must not be empty.");
        return stops;
    }

    static string RequiredString(JsonObject json, string field, string? name = null)
    {
        name ??= field;
        return json[field] switch
        {
            null => throw OpenAIError.Missing(name),
            JsonValue value when value.TryGetValue<string>(out var text) => text,
            _ => throw OpenAIError.Invalid(name, "expected a string."),
        };
    }

    static int? OptionalInt(JsonObject json, string field, int min)
    {
        if (json[field] is null) return null;
        if (json[field] is not JsonValue value || !value.TryGetValue<int>(out int number)) throw OpenAIError.Invalid(field, "expected an integer.");
        if (number < min) throw OpenAIError.Invalid(field, $"{number} is below the minimum of {min}.");
        return number;
    }

    static int? OptionalSeed(JsonObject json)
    {
        if (json["seed"] is null) return null;
        if (json["seed"] is not JsonValue value || !value.TryGetValue<long>(out long seed)) throw OpenAIError.Invalid("seed", "expected an integer.");
        return unchecked((int)seed ^ (int)(seed >> 32)); // System.Random takes an int seed; fold a 64-bit one into it
    }

    static double? OptionalNumber(JsonObject json, string field, double min, double max)
    {
        if (json[field] is null) return null;
        if (json[field] is not JsonValue value || !value.TryGetValue<double>(out double number)) throw OpenAIError.Invalid(field, "expected a number.");
        if (number < min || number > max) throw OpenAIError.Invalid(field, $"{number} is outside [{min}, {max}].");
        return number;
    }

    static bool? OptionalBool(JsonObject json, string field, string? name = null)
    {
        if (json[field] is null) return null;
        if (json[field] is not JsonValue value || !value.TryGetValue<bool>(out bool flag)) throw OpenAIError.Invalid(name ?? field, "expected true or false.");
        return flag;
    }

    static string FirstSentence(string message) => message.Split(". ")[0].TrimEnd('.') + ".";
}
