using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text;
using System.Text.Json.Nodes;
using MLNetFinetune.Data;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Server;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Models;

namespace MLNetFinetune.Tests.Server;

/// <summary>A real server on a loopback port, spoken to with the official OpenAI .NET client (and raw HTTP where the client cannot send what is tested).</summary>
[Collection(TorchCollection.Name)]
public class OpenAIServerTests(ExportedTinyModel exported) : IClassFixture<ExportedTinyModel>
{
    const string Question = "What is the capital?";

    Task<OpenAIServer> Start(int maxConcurrent = 128, string? apiKey = null, int maxBatch = 32) => OpenAIServer.StartAsync(new ServerOptions
    {
        Folder = exported.Folder, Port = 0, Provider = "cpu", Threads = 1, MaxConcurrent = maxConcurrent, ApiKey = apiKey, MaxBatch = maxBatch,
    });

    // Retries off: the client would otherwise retry 429 and 5xx and hide the status under test.
    static OpenAIClientOptions Options(OpenAIServer server) => new() { Endpoint = new Uri(server.Address, "/v1"), RetryPolicy = new ClientRetryPolicy(0) };

    static ChatClient Chat(OpenAIServer server, string? model = null, string key = "unused") => new(model ?? server.ModelId, new ApiKeyCredential(key), Options(server));

    // What the model answers alone, greedy, in its own prompt format (the course's question template: the folder records none).
    string Alone(string question, int maxTokens)
    {
        using var model = OnnxCausalLM.Load(exported.Folder, "cpu", threads: 1);
        return model.Generate(PromptTemplates.QuestionAnswer.Prompt.Format(("question", question)), new GenerationOptions { MaxNewTokens = maxTokens });
    }

    static HttpClient Http(OpenAIServer server) => new() { BaseAddress = server.Address, Timeout = TimeSpan.FromSeconds(60) };

    static async Task<JsonObject> Health(OpenAIServer server)
    {
        using var http = Http(server);
        return JsonNode.Parse(await http.GetStringAsync("/health"))!.AsObject();
    }

    [Fact]
    public async Task ChatPlainAndStreamedGiveTheModelsOwnAnswerWithUsage()
    {
        await using var server = await Start();
        Assert.Equal("127.0.0.1", server.Address.Host);
        string expected = Alone(Question, 12);
        var chat = Chat(server);
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
        ChatCompletion completion = await chat.CompleteChatAsync([new SystemChatMessage("Be brief."), new UserChatMessage(Question)], options);
        Assert.Equal(expected, completion.Content[0].Text);
        Assert.Equal("served", completion.Model);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(12, completion.Usage.OutputTokenCount);
        using (var model = OnnxCausalLM.Load(exported.Folder, "cpu", 1))
            Assert.Equal(model.Tokenizer.EncodeSequence(PromptTemplates.QuestionAnswer.Prompt.Format(("question", Question))).Count, completion.Usage.InputTokenCount);
        Assert.Equal(completion.Usage.InputTokenCount + 12, completion.Usage.TotalTokenCount);

        var pieces = new StringBuilder();
        ChatFinishReason? finish = null;
        ChatTokenUsage? usage = null;
        int updates = 0;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage(Question)], options))
        {
            updates++;
            foreach (var part in update.ContentUpdate) pieces.Append(part.Text);
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }
        Assert.Equal(expected, pieces.ToString());
        Assert.True(updates > 3, $"{updates} updates: the answer did not stream");
        Assert.Equal(ChatFinishReason.Length, finish);
        Assert.Equal(12, usage?.OutputTokenCount);

        // A stop string cuts the answer before it and ends it with finish reason stop.
        string stop = expected.Trim().Length > 4 ? expected.Trim()[2..4] : throw new InvalidOperationException($"answer '{expected}' too short to cut");
        ChatCompletion cut = await chat.CompleteChatAsync([new UserChatMessage(Question)], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12, StopSequences = { stop } });
        Assert.Equal(expected[..expected.IndexOf(stop, StringComparison.Ordinal)], cut.Content[0].Text);
        Assert.Equal(ChatFinishReason.Stop, cut.FinishReason);

        // Seeded sampling repeats itself. (The client marks Seed as experimental.)
#pragma warning disable OPENAI001
        var sampled = new ChatCompletionOptions { Temperature = 1.5f, Seed = 42, MaxOutputTokenCount = 12 };
#pragma warning restore OPENAI001
        string first = (await chat.CompleteChatAsync([new UserChatMessage(Question)], sampled)).Value.Content[0].Text;
        Assert.Equal(first, (await chat.CompleteChatAsync([new UserChatMessage(Question)], sampled)).Value.Content[0].Text);
    }

    [Fact]
    public async Task ChatAnswersComeWithoutTheFormatsSeparatorAndCompletionsRaw()
    {
        // A folder whose recorded format puts the first two characters the model generates before the answer: chat
        // answers (plain and streamed) lose exactly those, completions keep them.
        string raw = Alone(Question, 12);
        using var copy = new TempDirectory();
        foreach (string file in Directory.GetFiles(exported.Folder)) File.Copy(file, Path.Combine(copy.Path, Path.GetFileName(file)));
        PromptFormats.Save(new PromptFormat("two-chars", PromptTemplates.QuestionAnswer.Prompt, new PromptTemplate(raw[..2] + "{answer}")), copy.Path, eosToken: null);
        await using var server = await OpenAIServer.StartAsync(new ServerOptions { Folder = copy.Path, Port = 0, Provider = "cpu", Threads = 1, ModelName = "served" });
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 12 };
        var chat = Chat(server);
        Assert.Equal(raw[2..], (await chat.CompleteChatAsync([new UserChatMessage(Question)], options)).Value.Content[0].Text);
        var streamed = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage(Question)], options))
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(raw[2..], streamed.ToString());
        using var http = Http(server);
        var completion = await http.PostAsync("/v1/completions", new StringContent((new JsonObject
        {
            ["model"] = "served", ["prompt"] = PromptTemplates.QuestionAnswer.Prompt.Format(("question", Question)), ["max_tokens"] = 12, ["temperature"] = 0,
        }).ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal(raw, (string?)JsonNode.Parse(await completion.Content.ReadAsStringAsync())!["choices"]![0]!["text"]);
    }

    [Fact]
    public async Task CompletionsAndModelsSpeakTheProtocol()
    {
        await using var server = await Start();
        var chat = Chat(server);
        // The OpenAI .NET library has no public client for the legacy /v1/completions; its pipeline sends the request.
        var message = chat.Pipeline.CreateMessage();
        message.Request.Method = "POST";
        message.Request.Uri = new Uri(server.Address, "/v1/completions");
        message.Request.Headers.Set("Content-Type", "application/json");
        message.Request.Content = BinaryContent.Create(BinaryData.FromString("""{"model": "served", "prompt": "The model reads", "max_tokens": 9, "temperature": 0}"""));
        await chat.Pipeline.SendAsync(message);
        Assert.Equal(200, message.Response!.Status);
        var body = JsonNode.Parse(message.Response.Content.ToString())!;
        Assert.Equal("text_completion", (string?)body["object"]);
        using (var model = OnnxCausalLM.Load(exported.Folder, "cpu", 1))
            Assert.Equal(model.Generate("The model reads", new GenerationOptions { MaxNewTokens = 9 }), (string?)body["choices"]![0]!["text"]);
        Assert.Equal(9, (int)body["usage"]!["completion_tokens"]!);

        var models = new OpenAIModelClient(new ApiKeyCredential("unused"), Options(server));
        var listed = (await models.GetModelsAsync()).Value;
        Assert.Equal(["served"], listed.Select(m => m.Id));
        Assert.Equal("mlnet-finetune", listed[0].OwnedBy);
        Assert.Equal("served", (await models.GetModelAsync("served")).Value.Id);
        var missing = await Assert.ThrowsAsync<ClientResultException>(() => models.GetModelAsync("gpt-4o"));
        Assert.Equal(404, missing.Status);
        Assert.Contains("The model 'gpt-4o' does not exist", missing.Message);
    }

    [Fact]
    public async Task ThirtyTwoConcurrentRequestsAreAllAnsweredInSharedSteps()
    {
        await using var server = await Start();
        var chat = Chat(server);
        var questions = Enumerable.Range(0, 32).Select(i => $"Question {i}: which file holds setting {i % 5}?").ToArray();
        long stepsBefore = (long)(await Health(server))["decode_steps"]!;
        var answers = await Task.WhenAll(questions.Select(q =>
            chat.CompleteChatAsync([new UserChatMessage(q)], new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 16 })));
        long steps = (long)(await Health(server))["decode_steps"]! - stepsBefore;
        int tokens = answers.Sum(a => a.Value.Usage.OutputTokenCount);
        for (int i = 0; i < questions.Length; i += 7) Assert.Equal(Alone(questions[i], 16), answers[i].Value.Content[0].Text);
        Assert.True(steps < tokens / 4, $"{steps} decode steps for {tokens} tokens from 32 requests: they did not share forward passes");
    }

    [Fact]
    public async Task EveryRefusalHasItsStatusAndOpenAIsErrorShape()
    {
        await using var server = await Start(apiKey: "sk-right");
        using var http = Http(server);
        http.DefaultRequestHeaders.Authorization = new("Bearer", "sk-right");

        async Task<(HttpStatusCode Status, JsonNode Error)> Post(string path, string body)
        {
            var response = await http.PostAsync(path, new StringContent(body, Encoding.UTF8, "application/json"));
            return (response.StatusCode, JsonNode.Parse(await response.Content.ReadAsStringAsync())!["error"]!);
        }

        var (status, error) = await Post("/v1/chat/completions", """{"model": "served", "messages": [{"role": "user", "content": "hi"}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("not valid JSON", (string?)error["message"]);
        Assert.Equal("invalid_request_error", (string?)error["type"]);
        (status, error) = await Post("/v1/chat/completions", """{"model": "served"}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("messages", (string?)error["param"]);
        Assert.Contains("Missing required parameter: 'messages'", (string?)error["message"]);
        (status, error) = await Post("/v1/chat/completions", """{"model": "served", "messages": [{"role": "user", "content": 5}]}""");
        Assert.Equal("messages[0].content", (string?)error["param"]);
        (status, error) = await Post("/v1/completions", """{"messages": []}""");
        Assert.Equal("model", (string?)error["param"]);
        (status, error) = await Post("/v1/completions", """{"model": "served", "prompt": "hi", "max_tokens": "many"}""");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("max_tokens", (string?)error["param"]);

        var chat = Chat(server, key: "sk-right");
        var tooLong = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage(string.Join(' ', Enumerable.Repeat("tokenizers split text", 200)))]));
        Assert.Equal(400, tooLong.Status);
        Assert.Contains("maximum context length is 256 tokens", tooLong.Message);
        Assert.Contains("context_length_exceeded", tooLong.Message); // OpenAI's error code, which clients match on
        var noRoom = await Assert.ThrowsAsync<ClientResultException>(() => chat.CompleteChatAsync([new UserChatMessage(Question)], new ChatCompletionOptions { MaxOutputTokenCount = 250 }));
        Assert.Equal(400, noRoom.Status);
        Assert.Contains("250 in the completion", noRoom.Message);

        var unknown = await Assert.ThrowsAsync<ClientResultException>(() => Chat(server, model: "gpt-4o", key: "sk-right").CompleteChatAsync([new UserChatMessage(Question)]));
        Assert.Equal(404, unknown.Status);
        Assert.Contains("model 'gpt-4o' does not exist", unknown.Message);

        var wrongKey = await Assert.ThrowsAsync<ClientResultException>(() => Chat(server, key: "sk-wrong").CompleteChatAsync([new UserChatMessage(Question)]));
        Assert.Equal(401, wrongKey.Status);
        Assert.Contains("Incorrect API key", wrongKey.Message);
        using var anonymous = Http(server);
        var noKey = await anonymous.PostAsync("/v1/chat/completions", new StringContent("{}", Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Unauthorized, noKey.StatusCode);
        Assert.Contains("didn't provide an API key", await noKey.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health")).StatusCode); // health needs no key
    }

    [Fact]
    public async Task OverTheConcurrencyLimitIs429AndADisconnectMidStreamFreesTheSlot()
    {
        await using var server = await Start(maxConcurrent: 1);
        using var http = Http(server);
        using var cancel = new CancellationTokenSource();
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("""{"model": "served", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "ignore_eos": true, "stream": true}""", Encoding.UTF8, "application/json"),
        };
        var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancel.Token);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancel.Token));
        string? first = await reader.ReadLineAsync(cancel.Token);
        Assert.StartsWith("data: {", first);

        var busy = await Assert.ThrowsAsync<ClientResultException>(() => Chat(server).CompleteChatAsync([new UserChatMessage(Question)]));
        Assert.Equal(429, busy.Status);
        Assert.Contains("--max-concurrent", busy.Message);

        cancel.Cancel();
        response.Dispose();
        var wait = DateTime.UtcNow;
        JsonObject health;
        while ((int)(health = await Health(server))["in_flight"]! + (int)health["running"]! > 0 && DateTime.UtcNow - wait < TimeSpan.FromSeconds(10)) await Task.Delay(20);
        Assert.Equal(0, (int)health["in_flight"]!);
        Assert.Equal(0, (int)health["running"]!);
        ChatCompletion next = await Chat(server).CompleteChatAsync([new UserChatMessage(Question)], new ChatCompletionOptions { MaxOutputTokenCount = 4 });
        Assert.Equal(4, next.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task AStreamEndsWithDoneAndShutdownLetsRequestsInFlightFinish()
    {
        var server = await Start();
        using var http = Http(server);
        var streamed = await http.PostAsync("/v1/completions", new StringContent("""{"model": "served", "prompt": "a", "max_tokens": 5, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}}""", Encoding.UTF8, "application/json"));
        var events = (await streamed.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        var usage = JsonNode.Parse(events[^2]["data: ".Length..])!;
        Assert.Equal(5, (int)usage["usage"]!["completion_tokens"]!);
        Assert.Equal("length", (string?)JsonNode.Parse(events[^3]["data: ".Length..])!["choices"]![0]!["finish_reason"]);

        var inFlight = http.PostAsync("/v1/completions", new StringContent("""{"model": "served", "prompt": "a", "max_tokens": 120, "ignore_eos": true}""", Encoding.UTF8, "application/json"));
        var wait = DateTime.UtcNow;
        while ((int)(await Health(server))["running"]! == 0 && DateTime.UtcNow - wait < TimeSpan.FromSeconds(10)) await Task.Delay(5);
        await server.StopAsync();
        var answered = await inFlight;
        Assert.Equal(HttpStatusCode.OK, answered.StatusCode);
        Assert.Equal(120, (int)JsonNode.Parse(await answered.Content.ReadAsStringAsync())!["usage"]!["completion_tokens"]!);
        await Assert.ThrowsAsync<HttpRequestException>(() => http.GetAsync("/health"));
        await server.DisposeAsync();
    }
}
