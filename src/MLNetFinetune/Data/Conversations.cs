using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.ChatTemplates;

namespace MLNetFinetune.Data;

/// <summary>
/// Conversations as instruction data store them: a <c>messages</c> list of <c>{"role", "content"}</c> objects (TRL's
/// conversational format), kept in a text column as compact JSON.
/// </summary>
public static class Conversations
{
    /// <summary>Checks a <c>messages</c> list and returns it as compact JSON with only role and content; errors name the file, line and item.</summary>
    internal static string Check(string json, string path, long line)
    {
        DataFileException Bad(string problem) => new(path, line, $"field 'messages' {problem}", field: "messages");
        if (JsonNode.Parse(json) is not JsonArray items || items.Count == 0) throw Bad("must be a non-empty list of {\"role\", \"content\"} objects");
        var turns = new JsonArray();
        for (int i = 0; i < items.Count; i++)
        {
            if (items[i] is not JsonObject item) throw Bad($"item {i + 1} is not an object with \"role\" and \"content\"");
            string Text(string key) => item[key] is JsonValue v && v.TryGetValue(out string? text) ? text
                : throw Bad($"item {i + 1} has no text \"{key}\"{(item[key] is null ? "" : $" (it is {item[key]!.GetValueKind()})")}");
            string role = Text("role");
            if (role.Length == 0) throw Bad($"item {i + 1} has an empty \"role\"");
            turns.Add(new JsonObject { ["role"] = role, ["content"] = Text("content") });
        }
        if (!turns.Any(t => (string)t!["role"]! == "assistant")) throw Bad("has no assistant turn to learn from");
        return turns.ToJsonString();
    }

    /// <summary>The turns of a conversation column value.</summary>
    public static IReadOnlyList<ChatTurn> Parse(string json) =>
        JsonSerializer.Deserialize<JsonArray>(json)!.Select(t => new ChatTurn((string)t!["role"]!, (string)t["content"]!)).ToList();
}
