using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;

namespace MLNetFinetune.Server;

/// <summary>
/// An OpenAI-compatible HTTP server for an exported folder: <c>POST /v1/chat/completions</c> (the model's chat
/// template or prompt format renders the messages), <c>POST /v1/completions</c> (raw prompt), <c>GET /v1/models</c>,
/// <c>GET /health</c>; chat answers without the prompt format's separator (<c>qa-inline</c>'s space); streaming as server-sent events ending with <c>data: [DONE]</c>; responses and errors in
/// OpenAI's JSON shapes, so the OpenAI SDKs, Microsoft.Extensions.AI and any tool that speaks the API use it as they
/// use OpenAI. Concurrent requests share decode steps (<see cref="ContinuousBatcher"/>).
/// </summary>
public sealed class OpenAIServer : IAsyncDisposable
{
    readonly WebApplication _app;
    readonly OnnxCausalLM _model;
    readonly ChatPrompt _chatPrompt;
    readonly ContinuousBatcher _batcher;
    readonly ServerOptions _options;
    readonly long _created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
    int _inFlight;

    OpenAIServer(ServerOptions options, OnnxCausalLM model)
    {
        _options = options;
        _model = model;
        _chatPrompt = ChatPrompt.For(model);
        _batcher = new ContinuousBatcher(model, options.MaxBatch);
        ModelId = options.ModelName ?? Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(options.Folder)));

        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole().SetMinimumLevel(LogLevel.Warning);
        builder.WebHost.UseUrls($"http://{(options.Host.Contains(':') ? $"[{options.Host}]" : options.Host)}:{options.Port}");
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.ShutdownTimeout);
        _app = builder.Build();
        _app.MapGet("/health", () => Results.Json(new JsonObject
        {
            ["status"] = "ok", ["model"] = ModelId, ["running"] = _batcher.Running, ["waiting"] = _batcher.Waiting, ["in_flight"] = Volatile.Read(ref _inFlight),
            ["decode_steps"] = _batcher.DecodeSteps,
        }));
        _app.MapGet("/v1/models", (HttpContext context) => Answer(context, () => Results.Json(new JsonObject
        {
            ["object"] = "list",
            ["data"] = new JsonArray(ModelJson()),
        })));
        _app.MapGet("/v1/models/{id}", (HttpContext context, string id) => Answer(context, () =>
            id == ModelId ? Results.Json(ModelJson()) : throw UnknownModel(id)));
        _app.MapPost("/v1/chat/completions", (HttpContext context) => Complete(context, chat: true));
        _app.MapPost("/v1/completions", (HttpContext context) => Complete(context, chat: false));
        _app.MapFallback((HttpContext context) => Error(context, new OpenAIError(404, $"Unknown path: {context.Request.Method} {context.Request.Path}.")));
    }

    /// <summary>Loads <see cref="ServerOptions.Folder"/> and starts listening; <see cref="Address"/> says where.</summary>
    public static async Task<OpenAIServer> StartAsync(ServerOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxConcurrent, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxBatch, 1);
        var model = OnnxCausalLM.Load(options.Folder, options.Provider, options.Threads);
        OpenAIServer server;
        try
        {
            server = new OpenAIServer(options, model);
        }
        catch
        {
            model.Dispose();
            throw;
        }
        try
        {
            await server._app.StartAsync(cancellationToken);
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
        return server;
    }

    /// <summary>Where the server listens, e.g. <c>http://127.0.0.1:8000</c> (the port actually bound when 0 was asked).</summary>
    public Uri Address => new(_app.Services.GetRequiredService<Microsoft.AspNetCore.Hosting.Server.IServer>()
        .Features.Get<IServerAddressesFeature>()!.Addresses.First());

    /// <summary>The model's id in requests and <c>/v1/models</c>.</summary>
    public string ModelId { get; }

    /// <summary>The execution provider serving, and for <c>auto</c> why.</summary>
    public string Provider => _model.Provider;

    /// <summary>Completes when the host is asked to stop (Ctrl+C, SIGTERM, or <see cref="StopAsync"/>).</summary>
    public Task WaitForShutdownAsync(CancellationToken cancellationToken = default) => _app.WaitForShutdownAsync(cancellationToken);

    /// <summary>Stops listening and lets requests in flight finish (up to <see cref="ServerOptions.ShutdownTimeout"/>).</summary>
    public Task StopAsync(CancellationToken cancellationToken = default) => _app.StopAsync(cancellationToken);

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
        _batcher.Dispose();
        _model.Dispose();
    }

    JsonObject ModelJson() => new() { ["id"] = ModelId, ["object"] = "model", ["created"] = _created, ["owned_by"] = "mlnet-finetune" };

    static OpenAIError UnknownModel(string id) => new(404, $"The model '{id}' does not exist.", "model", "model_not_found");

    // Runs a handler behind the API key check, turning a refusal into OpenAI's error body.
    async Task Answer(HttpContext context, Func<IResult> handler)
    {
        try
        {
            Authorize(context);
            await handler().ExecuteAsync(context);
        }
        catch (OpenAIError e)
        {
            await Error(context, e);
        }
    }

    void Authorize(HttpContext context)
    {
        if (_options.ApiKey == null) return;
        string header = context.Request.Headers.Authorization.ToString();
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
            throw new OpenAIError(401, "You didn't provide an API key. Send it in the Authorization header: 'Authorization: Bearer YOUR_KEY'.", code: "invalid_api_key");
        // Constant-time comparison: the key's bytes do not leak through response timing.
        if (!CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header["Bearer ".Length..].Trim()), Encoding.UTF8.GetBytes(_options.ApiKey)))
            throw new OpenAIError(401, "Incorrect API key provided.", code: "invalid_api_key");
    }

    static Task Error(HttpContext context, OpenAIError error)
    {
        if (context.Response.HasStarted) return Task.CompletedTask; // a stream already under way cannot change its status
        if (error.Status == 429) context.Response.Headers.RetryAfter = "1";
        return Results.Json(error.Body(), statusCode: error.Status).ExecuteAsync(context);
    }

    async Task Complete(HttpContext context, bool chat)
    {
        bool counted = false;
        try
        {
            Authorize(context);
            counted = true;
            if (Interlocked.Increment(ref _inFlight) > _options.MaxConcurrent)
                throw new OpenAIError(429, $"The server is busy: {_options.MaxConcurrent} requests are in flight (--max-concurrent). Retry shortly.", code: "rate_limit_exceeded", type: "requests");

            using var body = new MemoryStream();
            await context.Request.Body.CopyToAsync(body, context.RequestAborted);
            var request = CompletionRequest.Parse(body.GetBuffer().AsSpan(0, (int)body.Length), chat);
            if (request.Model != ModelId) throw UnknownModel(request.Model);

            string prompt = chat ? _chatPrompt.Render(request.Messages!) : request.Prompt!;
            long[] ids = [.. _model.Tokenizer.EncodeSequence(prompt).Select(i => (long)i)];
            int contextLength = _model.Config.MaxPositionEmbeddings;
            string what = chat ? "messages" : "prompt";
            if (ids.Length == 0) throw OpenAIError.Invalid(what, "the prompt is empty.");
            if (ids.Length >= contextLength || ids.Length + (request.MaxTokens ?? 1) > contextLength)
                throw new OpenAIError(400, $"This model's maximum context length is {contextLength} tokens. However, you requested {ids.Length + (request.MaxTokens ?? 1)} tokens " +
                    $"({ids.Length} in the {what}, {request.MaxTokens ?? 1} in the completion). Please reduce the length of the {what} or completion.", what, "context_length_exceeded");
            var options = new GenerationOptions
            {
                MaxNewTokens = request.MaxTokens ?? contextLength - ids.Length,
                Temperature = request.Temperature,
                TopP = request.TopP,
                Seed = request.Seed ?? Random.Shared.Next(),
                IgnoreEos = request.IgnoreEos,
                StopSequences = [.. request.Stop, .. chat ? _chatPrompt.StopSequences : []],
            };
            var generation = _batcher.Submit(ids, options, request.Stream, context.RequestAborted);
            string id = (chat ? "chatcmpl-" : "cmpl-") + Guid.NewGuid().ToString("N");
            long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
            if (request.Stream) await Stream(context, generation, request, id, created, chat);
            else
            {
                var result = await generation.Completion.WaitAsync(context.RequestAborted);
                JsonObject choice = chat
                    ? new() { ["index"] = 0, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = _chatPrompt.NewAnswer().Next(result.Text) }, ["logprobs"] = null, ["finish_reason"] = result.FinishReason }
                    : new() { ["index"] = 0, ["text"] = result.Text, ["logprobs"] = null, ["finish_reason"] = result.FinishReason };
                await Results.Json(Envelope(id, chat ? "chat.completion" : "text_completion", created, choice, Usage(result))).ExecuteAsync(context);
            }
        }
        catch (OpenAIError e)
        {
            await Error(context, e);
        }
        catch (ArgumentException e) when (!context.Response.HasStarted)
        {
            // The chat template refused the conversation (e.g. roles out of the order it requires).
            await Error(context, new OpenAIError(400, e.Message, chat ? "messages" : "prompt"));
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            // The client went away; its generation was cancelled with it and its slot is free.
        }
        finally
        {
            if (counted) Interlocked.Decrement(ref _inFlight);
        }
    }

    async Task Stream(HttpContext context, BatchedGeneration generation, CompletionRequest request, string id, long created, bool chat)
    {
        context.Response.ContentType = "text/event-stream";
        context.Response.Headers.CacheControl = "no-cache";
        string kind = chat ? "chat.completion.chunk" : "text_completion";
        JsonObject Chunk(string? text, string? finish, bool first = false) => Envelope(id, kind, created, chat
            ? new JsonObject
            {
                ["index"] = 0,
                ["delta"] = first ? new JsonObject { ["role"] = "assistant", ["content"] = "" } : text == null ? new JsonObject() : new JsonObject { ["content"] = text },
                ["logprobs"] = null,
                ["finish_reason"] = finish,
            }
            : new JsonObject { ["index"] = 0, ["text"] = text ?? "", ["logprobs"] = null, ["finish_reason"] = finish });

        var aborted = context.RequestAborted;
        // Chat answers come without the prompt format's separator; completions give the raw continuation.
        var answer = chat ? _chatPrompt.NewAnswer() : new AnswerTrimmer("");
        if (chat) await Send(context, Chunk(null, null, first: true), aborted);
        await foreach (string piece in generation.Pieces.ReadAllAsync(aborted))
            if (answer.Next(piece) is { Length: > 0 } text) await Send(context, Chunk(text, null), aborted);
        var result = await generation.Completion.WaitAsync(aborted);
        await Send(context, Chunk(null, result.FinishReason), aborted);
        if (request.IncludeUsage)
        {
            var usage = Envelope(id, kind, created, null, Usage(result));
            await Send(context, usage, aborted);
        }
        await context.Response.WriteAsync("data: [DONE]\n\n", aborted);
        await context.Response.Body.FlushAsync(aborted);
    }

    static async Task Send(HttpContext context, JsonObject chunk, CancellationToken cancellationToken)
    {
        await context.Response.WriteAsync($"data: {chunk.ToJsonString()}\n\n", cancellationToken);
        await context.Response.Body.FlushAsync(cancellationToken);
    }

    JsonObject Envelope(string id, string kind, long created, JsonObject? choice, JsonObject? usage = null)
    {
        var envelope = new JsonObject { ["id"] = id, ["object"] = kind, ["created"] = created, ["model"] = ModelId, ["choices"] = choice == null ? new JsonArray() : new JsonArray(choice) };
        if (usage != null) envelope["usage"] = usage;
        return envelope;
    }

    // Completion tokens count what the model generated, its end-of-text token included (as vLLM counts them).
    static JsonObject Usage(BatchedResult result) => new()
    {
        ["prompt_tokens"] = result.PromptTokens, ["completion_tokens"] = result.CompletionTokens, ["total_tokens"] = result.PromptTokens + result.CompletionTokens,
    };
}
