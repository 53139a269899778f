using System.Text.Json.Nodes;

namespace MLNetFinetune.Server;

/// <summary>
/// A request the server refuses, with the HTTP status and OpenAI's error body: <c>{"error": {"message", "type",
/// "param", "code"}}</c>, so clients (the OpenAI SDKs) report it as they report OpenAI's own.
/// </summary>
public sealed class OpenAIError(int status, string message, string? param = null, string? code = null, string type = "invalid_request_error") : Exception(message)
{
    /// <summary>The HTTP status.</summary>
    public int Status { get; } = status;

    /// <summary>The request field at fault, or null.</summary>
    public string? Param { get; } = param;

    /// <summary>OpenAI's machine-readable code (<c>invalid_api_key</c>, <c>model_not_found</c>, <c>rate_limit_exceeded</c>…), or null.</summary>
    public string? Code { get; } = code;

    /// <summary>OpenAI's error type.</summary>
    public string Type { get; } = type;

    /// <summary>The response body.</summary>
    public JsonObject Body() => new()
    {
        ["error"] = new JsonObject { ["message"] = Message, ["type"] = Type, ["param"] = Param, ["code"] = Code },
    };

    /// <summary>A required field is absent.</summary>
    public static OpenAIError Missing(string field) => new(400, $"Missing required parameter: '{field}'.", field);

    /// <summary>A field has the wrong type or value.</summary>
    public static OpenAIError Invalid(string field, string problem) => new(400, $"Invalid '{field}': {problem}", field);
}
