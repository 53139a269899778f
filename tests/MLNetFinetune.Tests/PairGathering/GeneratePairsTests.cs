using System.ClientModel;
using System.ClientModel.Primitives;
using System.Net;
using System.Text.Json;
using Microsoft.Data.Analysis;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.PairGathering;

namespace MLNetFinetune.Tests.PairGathering;

public class GeneratePairsTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static string Jsonl(IEnumerable<object> records) => string.Concat(records.Select(r => JsonSerializer.Serialize(r) + "\n"));

    string Questions(string name, IEnumerable<string> questions) => _dir.File(name, Jsonl(questions.Select(q => new { question = q })));

    static string[] Lines(string path) => File.ReadAllLines(path);

    [Fact]
    public async Task DropsEachKindOfBadPairAndCountsItByReason()
    {
        string longAnswer = "The library reads a corpus of JSON Lines files, trains a byte level tokenizer on it, pretrains a small model, finetunes it on question and answer pairs and exports it to ONNX for serving";
        var script = new Dictionary<string, ChatResponse>
        {
            ["What is the capital of France?"] = ScriptedChatClient.Text("Paris is the capital of France."),
            ["what is the capital of France"] = ScriptedChatClient.Text("Paris is the capital of France!"),        // same after normalising
            ["What does the library do, step by step?"] = ScriptedChatClient.Text(longAnswer + "."),
            ["what does the library do, step by step"] = ScriptedChatClient.Text(longAnswer + " too."),           // one word apart
            ["How do I pick a lock?"] = ScriptedChatClient.Text("I’m sorry, but I can’t help with that."),
            ["Say nothing."] = ScriptedChatClient.Text("  \n"),
            ["Write an essay."] = ScriptedChatClient.Text(string.Join(' ', Enumerable.Repeat("word", 500))),
            ["Count to a million."] = ScriptedChatClient.Text("1, 2, 3, 4", ChatFinishReason.Length),
            ["What is 2 + 2?"] = ScriptedChatClient.Text("4"),
        };
        string[] questions = [.. script.Keys.Take(2), "What is the capital of France?", .. script.Keys.Skip(2)];
        var client = new ScriptedChatClient((q, _) => script[q]);
        string output = Path.Combine(_dir.Path, "pairs.jsonl");

        var report = await PairGatherer.GatherAsync(client, new PairGatheringOptions { InputsPath = Questions("in.jsonl", questions), OutputPath = output });

        Assert.Equal(3, report.Kept);
        Assert.Equal(new Dictionary<RejectReason, long>
        {
            [RejectReason.Duplicate] = 2, [RejectReason.NearDuplicate] = 1, [RejectReason.Refusal] = 1,
            [RejectReason.Empty] = 1, [RejectReason.TooLong] = 2, [RejectReason.Malformed] = 0,
        }, report.Rejects);
        Assert.Equal(questions.Length, report.Inputs);
        var kept = Lines(output).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["What is the capital of France?", "What does the library do, step by step?", "What is 2 + 2?"], kept.Select(p => p.GetProperty("question").GetString()));
        Assert.Equal("4", kept[^1].GetProperty("answer").GetString());
        Assert.Equal($"{Path.Combine(_dir.Path, "in.jsonl")}:{questions.Length}", kept[^1].GetProperty("source").GetString());
        Assert.Equal("scripted-model", kept[^1].GetProperty("model").GetString());
        Assert.Equal(PairGatherer.PromptHash(new PairGatheringOptions { InputsPath = "x.jsonl" }), kept[^1].GetProperty("prompt_hash").GetString());

        // The ledger keeps every reject with its reason, one line per input after the settings.
        var ledger = Lines(output + PairGatherer.LedgerSuffix);
        Assert.Equal(1 + questions.Length, ledger.Length);
        Assert.Contains("\"reason\":\"refusal\"", ledger[6]);
        Assert.Contains("\"reason\":\"near_duplicate\"", ledger[5]);
        Assert.Equal("""{"kept":3,"rejects":{"duplicate":2,"near_duplicate":1,"refusal":1,"empty":1,"too_long":2,"malformed":0},"malformed":0,"retries":0,"inputs":10,"resumed":0,"seconds":""",
            report.ToJson()[..report.ToJson().LastIndexOf(':')] + ":");
    }

    [Fact]
    public async Task RetriesRateLimitsAndServerErrorsThenSucceeds()
    {
        var client = new ScriptedChatClient((q, attempt) => (q, attempt) switch
        {
            ("Q1", 0) => throw new HttpRequestException("Too Many Requests", null, HttpStatusCode.TooManyRequests),
            ("Q2", < 2) => throw new ClientResultException("Service Unavailable", new StatusResponse(503)),
            _ => ScriptedChatClient.Text("answer to " + q),
        });
        string output = Path.Combine(_dir.Path, "pairs.jsonl");
        var report = await PairGatherer.GatherAsync(client, new PairGatheringOptions
        {
            InputsPath = Questions("in.jsonl", ["Q1", "Q2", "Q3"]), OutputPath = output, RetryDelay = TimeSpan.FromMilliseconds(1),
        });
        Assert.Equal(3, report.Kept);
        Assert.Equal(3, report.Retries);
        Assert.Equal(6, client.Requests);

        // A bad key is not retried: the run stops at once and says why.
        var denied = new ScriptedChatClient((_, _) => throw new ClientResultException("Unauthorized: bad key", new StatusResponse(401)));
        var e = await Assert.ThrowsAsync<ClientResultException>(() => PairGatherer.GatherAsync(denied, new PairGatheringOptions
        {
            InputsPath = Questions("other.jsonl", ["Q1"]), OutputPath = Path.Combine(_dir.Path, "denied.jsonl"), RetryDelay = TimeSpan.FromMilliseconds(1),
        }));
        Assert.Contains("bad key", e.Message);
        Assert.Equal(1, denied.Requests);

        // Retries run out: the error says so and that a rerun continues.
        var down = new ScriptedChatClient((_, _) => throw new HttpRequestException("Bad Gateway", null, HttpStatusCode.BadGateway));
        var exhausted = await Assert.ThrowsAsync<InvalidOperationException>(() => PairGatherer.GatherAsync(down, new PairGatheringOptions
        {
            InputsPath = Questions("third.jsonl", ["Q1"]), OutputPath = Path.Combine(_dir.Path, "down.jsonl"), RetryDelay = TimeSpan.FromMilliseconds(1), MaxRetries = 2,
        }));
        Assert.Contains("still failed after 2 retries (Bad Gateway); rerun later to continue", exhausted.Message);
        Assert.Equal(3, down.Requests);
    }

    [Fact]
    public async Task DocumentsModeRetriesAMalformedReplyOnceThenCountsIt()
    {
        string corpus = _dir.File("docs/a.jsonl", Jsonl([new { text = "Alpha is the first letter." }, new { text = "Beta is the second letter." }, new { text = "Gamma is the third letter." }]));
        string task = "Write questions a student would ask about the Greek alphabet.";
        var client = new ScriptedChatClient((request, attempt) =>
        {
            Assert.StartsWith(task + "\n\nDocument:\n", request);
            Assert.EndsWith("Reply with JSON only, no other text: an array of objects with the string fields \"question\" and \"answer\", like [{\"question\": \"...\", \"answer\": \"...\"}].", request);
            if (request.Contains("Alpha")) return ScriptedChatClient.Text("```json\n[{\"question\": \"Which letter is first?\", \"answer\": \"Alpha\"}, {\"question\": \"What is alpha?\", \"answer\": \"The first letter.\"}]\n```");
            if (request.Contains("Beta")) return ScriptedChatClient.Text(attempt == 0 ? "Sure! Here are the pairs: [{\"question\": \"Which letter is second?\" \"answer\": \"Beta\"}]"
                : "[{\"question\": \"Which letter is second?\", \"answer\": \"Beta\"}]");
            return ScriptedChatClient.Text("[{\"q\": \"Which letter is third?\", \"a\": \"Gamma\"}]");
        });
        string output = Path.Combine(_dir.Path, "pairs.jsonl");
        var report = await PairGatherer.GatherAsync(client, new PairGatheringOptions
        {
            Documents = new CorpusOptions { Path = Path.Combine(_dir.Path, "docs") }, Task = task, PairsPerDocument = 2, OutputPath = output,
        });

        Assert.Equal(3, report.Kept);
        Assert.Equal(3, report.Malformed); // Beta's first reply, Gamma's two
        Assert.Equal(1, report.Rejects[RejectReason.Malformed]);
        Assert.Equal(5, client.Requests);
        // The retry shows the model its reply and what is wrong with it.
        var retry = client.Conversations.Single(c => c.Count == 3 && c[0].Text.Contains("Beta"));
        Assert.StartsWith("That reply cannot be read: malformed JSON", retry[2].Text);
        var gammaRetry = client.Conversations.Single(c => c.Count == 3 && c[0].Text.Contains("Gamma"));
        Assert.StartsWith("That reply cannot be read: item 1 is not an object with string fields \"question\" and \"answer\"", gammaRetry[2].Text);

        var pairs = InstructionData.Load(output);
        Assert.Equal(["Which letter is first?", "What is alpha?", "Which letter is second?"], pairs.Columns["question"].Cast<string>());
        Assert.Equal(["Alpha", "The first letter.", "Beta"], pairs.Columns["answer"].Cast<string>());
        Assert.EndsWith("a.jsonl:2", JsonDocument.Parse(Lines(output)[2]).RootElement.GetProperty("source").GetString());
    }

    [Fact]
    public async Task KeepsAtMostConcurrencyRequestsInFlight()
    {
        var client = new ScriptedChatClient((q, _) => ScriptedChatClient.Text("answer to " + q), TimeSpan.FromMilliseconds(20));
        var report = await PairGatherer.GatherAsync(client, new PairGatheringOptions
        {
            InputsPath = Questions("in.jsonl", Enumerable.Range(0, 30).Select(i => $"Question {i}?")), OutputPath = Path.Combine(_dir.Path, "pairs.jsonl"), Concurrency = 3,
        });
        Assert.Equal(30, report.Kept);
        Assert.Equal(3, client.MostInFlight);
    }

    // The same answer to the same question on every run, with refusals; a fault at one request plays a crash.
    static ScriptedChatClient Deterministic(int? failAt = null)
    {
        int calls = 0;
        return new ScriptedChatClient((q, _) =>
        {
            if (Interlocked.Increment(ref calls) == failAt) throw new InvalidOperationException("the process was killed");
            int i = int.Parse(q.Split(' ')[1].TrimEnd('?'));
            return ScriptedChatClient.Text(i % 7 == 3 ? "I cannot answer that." : $"Answer {i}");
        });
    }

    [Fact]
    public async Task ARunKilledAndRerunEndsWithTheSameFilesAsAnUninterruptedOne()
    {
        string inputs = Questions("in.jsonl", Enumerable.Range(0, 40).Select(i => $"Question {i % 37}?")); // the last three repeat the first
        PairGatheringOptions Options(string output) => new() { InputsPath = inputs, OutputPath = output, Concurrency = 2 };

        string whole = Path.Combine(_dir.Path, "whole.jsonl");
        var uninterrupted = await PairGatherer.GatherAsync(Deterministic(), Options(whole));

        // A crash in the fourth batch (8 inputs each) leaves three batches; a kill then cuts a pair line and a ledger line short,
        // and one more batch's pairs reached the file without their ledger lines.
        string resumed = Path.Combine(_dir.Path, "resumed.jsonl");
        await Assert.ThrowsAsync<InvalidOperationException>(() => PairGatherer.GatherAsync(Deterministic(failAt: 30), Options(resumed)));
        var done = Lines(resumed);
        Assert.InRange(done.Length, 1, Lines(whole).Length - 3);
        File.AppendAllLines(resumed, Lines(whole).Skip(done.Length).Take(2));
        File.AppendAllText(resumed, Lines(whole)[done.Length + 2][..10]);
        File.AppendAllText(resumed + PairGatherer.LedgerSuffix, "{\"input\":24,\"ke");

        var client = Deterministic();
        var report = await PairGatherer.GatherAsync(client, Options(resumed));
        Assert.Equal(24, report.Resumed);
        Assert.Equal(16, report.Inputs);
        Assert.Equal(16, client.Requests);
        Assert.Equal(File.ReadAllBytes(whole), File.ReadAllBytes(resumed));
        Assert.Equal(File.ReadAllBytes(whole + PairGatherer.LedgerSuffix), File.ReadAllBytes(resumed + PairGatherer.LedgerSuffix));
        Assert.Equal(uninterrupted with { Retries = 0, Inputs = 0, Resumed = 0, Seconds = 0 }, report with { Retries = 0, Inputs = 0, Resumed = 0, Seconds = 0 },
            new ReportComparer());

        // Done is done: a third run asks nothing.
        var idle = Deterministic();
        Assert.Equal(0, (await PairGatherer.GatherAsync(idle, Options(resumed))).Inputs);
        Assert.Equal(0, idle.Requests);
    }

    sealed class ReportComparer : IEqualityComparer<PairGatheringReport>
    {
        public bool Equals(PairGatheringReport? x, PairGatheringReport? y) => x!.ToJson() == y!.ToJson();
        public int GetHashCode(PairGatheringReport obj) => 0;
    }

    [Fact]
    public async Task RefusesToContinueAFileMadeWithAnotherPromptUnlessAllowed()
    {
        string inputs = Questions("in.jsonl", ["Q1", "Q2"]);
        string output = Path.Combine(_dir.Path, "pairs.jsonl");
        var client = new ScriptedChatClient((q, _) => ScriptedChatClient.Text("answer to " + q));
        await PairGatherer.GatherAsync(client, new PairGatheringOptions { InputsPath = inputs, OutputPath = output, MaxInputs = 1 });

        var other = new PairGatheringOptions { InputsPath = inputs, OutputPath = output, InputTemplate = new PromptTemplate("Answer briefly: {question}") };
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => PairGatherer.GatherAsync(client, other));
        Assert.Equal($"'{output}' was made with prompt {PairGatherer.PromptHash(new PairGatheringOptions { InputsPath = inputs })} and model 'scripted-model'; " +
            $"this run has prompt {PairGatherer.PromptHash(other)} and model 'scripted-model'. Continuing would mix the two: give another output file, remove it and its ledger, or allow the change (--force).",
            e.Message);

        var report = await PairGatherer.GatherAsync(client, other with { AllowSettingsChange = true });
        Assert.Equal(2, report.Kept);
        var hashes = Lines(output).Select(l => JsonDocument.Parse(l).RootElement.GetProperty("prompt_hash").GetString()).ToList();
        Assert.NotEqual(hashes[0], hashes[1]);
        Assert.Equal("Answer briefly: Q2", JsonDocument.Parse(Lines(output)[1]).RootElement.GetProperty("question").GetString());

        // A file that this did not write is not appended to.
        string foreign = _dir.File("foreign.jsonl", "{\"question\": \"q\", \"answer\": \"a\"}\n");
        var notOurs = await Assert.ThrowsAsync<InvalidOperationException>(() => PairGatherer.GatherAsync(client, new PairGatheringOptions { InputsPath = inputs, OutputPath = foreign }));
        Assert.Contains("has no ledger", notOurs.Message);
    }

    [Fact]
    public async Task AnInputWithoutATemplateFieldFailsNamingFileLineAndField()
    {
        string inputs = _dir.File("in.csv", "passage,question\n\"Lima is in Peru.\",Where is Lima?\n\"Quito is in Ecuador.\",\n");
        var client = new ScriptedChatClient((q, _) => ScriptedChatClient.Text("x"));
        var e = await Assert.ThrowsAsync<DataFileException>(() => PairGatherer.GatherAsync(client, new PairGatheringOptions
        {
            InputsPath = inputs, InputTemplate = new PromptTemplate("Passage: {passage}\nQuestion: {question}"), OutputPath = Path.Combine(_dir.Path, "out.jsonl"),
        }));
        Assert.Equal($"{inputs}:3: field 'question' is empty", e.Message);
        Assert.Equal("question", e.Field);
        Assert.Equal(0, client.Requests);
    }

    [Fact]
    public void GeneratePairsFeedsAPromptFormatAsADataFrame()
    {
        var ml = new MLContext(seed: 0);
        string inputs = _dir.File("in.jsonl", Jsonl([new { passage = "Lima is in Peru.", question = "Where is Lima?" }, new { passage = "Quito is in Ecuador.", question = "Where is Quito?" }]));
        var client = new ScriptedChatClient((q, _) => ScriptedChatClient.Text(q.Contains("Lima") ? " Peru " : "Ecuador"));
        DataFrame pairs = ml.Data.GeneratePairs(client, new PairGatheringOptions
        {
            InputsPath = inputs, InputTemplate = new PromptTemplate("Passage: {passage}\nQuestion: {question}"), OutputPath = Path.Combine(_dir.Path, "pairs.jsonl"),
        });
        Assert.Equal(["question", "answer", "source", "model", "prompt_hash"], pairs.Columns.Select(c => c.Name));
        Assert.Equal(["Peru", "Ecuador"], pairs.Columns["answer"].Cast<string>());
        var rendered = ml.Transforms.Text.ApplyPromptFormat(PromptTemplates.QuestionAnswer).Fit(pairs).Transform(pairs);
        Assert.Equal("### Question:\nPassage: Lima is in Peru.\nQuestion: Where is Lima?\n\n### Answer:", rendered.GetColumn<ReadOnlyMemory<char>>("Prompt").First().ToString());
        Assert.Equal("\nPeru", rendered.GetColumn<ReadOnlyMemory<char>>("Response").First().ToString());
        // finetune --pairs reads the file as question/answer pairs.
        Assert.Equal(InstructionLayout.QuestionAnswer, InstructionData.DetectLayout(InstructionData.Load(Path.Combine(_dir.Path, "pairs.jsonl")).Columns.Select(c => c.Name)));
    }

    [Fact]
    public async Task ScoresTheModelOnASeededSampleOfPairs()
    {
        string pairs = _dir.File("pairs.jsonl", Jsonl(Enumerable.Range(0, 20).Select(i => new { question = $"What is {i} + 1?", answer = $"{i + 1}." })));
        // Right on even numbers (case and punctuation ignored), wrong on odd ones.
        var client = new ScriptedChatClient((q, _) =>
        {
            int i = int.Parse(q.Split(' ')[2]);
            return ScriptedChatClient.Text(i % 2 == 0 ? $" {i + 1}" : "no idea");
        });
        var score = await PairScorer.ScoreAsync(client, pairs, 8, seed: 3);
        Assert.Equal(8, score.Metrics.Count);
        Assert.Equal(8, client.Requests);
        int even = score.Questions.Count(q => int.Parse(q.Split(' ')[2]) % 2 == 0);
        Assert.Equal(even, score.Metrics.ExactMatch.Hits);
        Assert.Equal((double)even / 8, score.Metrics.TokenF1, 9);
        Assert.Equal(score.Questions, (await PairScorer.ScoreAsync(client, pairs, 8, seed: 3)).Questions);
        Assert.NotEqual(score.Questions, (await PairScorer.ScoreAsync(client, pairs, 8, seed: 4)).Questions);
        Assert.Equal(20, (await PairScorer.ScoreAsync(client, pairs, 100)).Metrics.Count);
    }

    // The smallest pipeline response with a status, as the OpenAI client's errors carry one.
    sealed class StatusResponse(int status) : PipelineResponse
    {
        public override int Status => status;
        public override string ReasonPhrase => "";
        public override Stream? ContentStream { get; set; }
        public override BinaryData Content => BinaryData.FromString("");
        protected override PipelineResponseHeaders HeadersCore => throw new NotSupportedException();
        public override BinaryData BufferContent(CancellationToken cancellationToken = default) => Content;
        public override ValueTask<BinaryData> BufferContentAsync(CancellationToken cancellationToken = default) => new(Content);
        public override void Dispose() { }
    }
}
