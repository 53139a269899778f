using System.ClientModel;
using System.ClientModel.Primitives;
using System.CommandLine;
using Microsoft.Extensions.AI;
using MLNetFinetune.Data;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.PairGathering;
using OpenAI;
using Spectre.Console;

namespace MLNetFinetune.Cli;

/// <summary>
/// <c>mlnet-finetune pairs try|generate|score</c>: the lab's steps 1–2 over any chat model, thin wrappers over
/// <see cref="PairGatherer"/> and <see cref="PairScorer"/>.
/// </summary>
static class PairsCommand
{
    static readonly PairGatheringOptions Defaults = new();

    public static Command Create(TextWriter output) => new("pairs", "Gather input/output pairs from a large model (an OpenAI-compatible endpoint or a local exported folder): " +
        "try a prompt, generate pairs to finetune on, score the model on pairs.")
    {
        Try(output), Generate(output), Score(output),
    };

    static Command Try(TextWriter output)
    {
        var (model, source) = (new Model(), new Source());
        var count = new Option<int>("-n", "--count") { Description = "How many inputs to try.", DefaultValueFactory = _ => 5 };
        var command = new Command("try", "Run the prompt over the first inputs (or documents) and show each beside the model's reply.") { count };
        foreach (var o in model.All.Concat(source.All)) command.Options.Add(o);
        command.SetAction(async (result, cancellationToken) =>
        {
            using var client = model.Client(result, output);
            var trials = await PairGatherer.TryAsync(client, source.Apply(model.Requests(result), result), result.GetValue(count), cancellationToken);
            if (!ProgressDisplay.IsTerminal(output))
            {
                for (int i = 0; i < trials.Count; i++) output.WriteLine($"[{i}] input:\n{Indent(trials[i].Input)}\n    output:\n{Indent(trials[i].Output)}\n");
                return 0;
            }
            var table = new Table().AddColumn("#").AddColumn("input").AddColumn("output");
            for (int i = 0; i < trials.Count; i++) table.AddRow(i.ToString(), Markup.Escape(trials[i].Input), Markup.Escape(trials[i].Output));
            AnsiConsole.Write(table);
            return 0;
        });
        return command;
    }

    static Command Generate(TextWriter output)
    {
        var (model, source) = (new Model(), new Source());
        var outPath = new Option<string>("--out") { Description = $"The pairs file (JSONL) to write or continue; its ledger is written beside it (<out>{PairGatherer.LedgerSuffix}).", Required = true };
        var limit = new Option<long?>("--limit") { Description = "Stop after this many inputs or documents (a rerun with a larger limit continues)." };
        var near = new Option<double>("--near-duplicate-threshold") { Description = "Drop pairs whose word 3-grams overlap a kept pair's this much (Jaccard; 1: exact duplicates only).", DefaultValueFactory = _ => Defaults.NearDuplicateThreshold };
        var maxChars = new Option<int>("--max-answer-chars") { Description = "Drop longer answers.", DefaultValueFactory = _ => Defaults.MaxAnswerChars };
        var force = new Option<bool>("--force") { Description = "Continue a pairs file made with another prompt or model." };
        var command = new Command("generate", "Gather pairs: the model answers each input (--inputs, distillation) or writes pairs about each document (--docs, self-instruct). " +
            "Duplicates, refusals, empty and over-long answers are dropped; a rerun continues where a stopped run ended. Ends with a JSON report.")
        {
            outPath, limit, near, maxChars, force,
        };
        foreach (var o in model.All.Concat(source.All)) command.Options.Add(o);
        command.SetAction(async (result, cancellationToken) =>
        {
            using var client = model.Client(result, output);
            var report = await ProgressDisplay.Gather(output, "pairs", progress => PairGatherer.GatherAsync(client, source.Apply(model.Requests(result), result) with
            {
                OutputPath = result.GetValue(outPath), MaxInputs = result.GetValue(limit), NearDuplicateThreshold = result.GetValue(near),
                MaxAnswerChars = result.GetValue(maxChars), AllowSettingsChange = result.GetValue(force), Progress = progress,
            }, cancellationToken));
            output.WriteLine(report.ToJson());
            return 0;
        });
        return command;
    }

    static Command Score(TextWriter output)
    {
        var model = new Model();
        var pairs = new Option<string>("--pairs") { Description = "Pairs to score on (.jsonl or .csv; question/answer, Alpaca or prompt/completion).", Required = true };
        var count = new Option<int>("-n", "--count") { Description = "How many pairs to sample.", DefaultValueFactory = _ => 50 };
        var seed = new Option<int>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 0 };
        var command = new Command("score", "Ask the model a seeded sample of the pairs' questions and score its answers against theirs (exact match with a 95% interval, token F1; case and punctuation ignored).")
        {
            pairs, count, seed,
        };
        foreach (var o in model.All) command.Options.Add(o);
        command.SetAction(async (result, cancellationToken) =>
        {
            using var client = model.Client(result, output);
            var score = await PairScorer.ScoreAsync(client, result.GetValue(pairs)!, result.GetValue(count), model.Requests(result), result.GetValue(seed), cancellationToken: cancellationToken);
            output.WriteLine(score.Metrics);
            return 0;
        });
        return command;
    }

    static string Indent(string text) => "    " + text.ReplaceLineEndings("\n    ");

    // The model and how it is asked, shared by the three verbs; defaults are PairGatheringOptions'.
    sealed class Model
    {
        readonly Option<string?> _endpoint = new("--endpoint") { Description = "An OpenAI-compatible endpoint, e.g. https://api.openai.com/v1 or http://localhost:8000/v1." };
        readonly Option<string?> _model = new("--model") { Description = "The model name at the endpoint." };
        readonly Option<string> _keyEnv = new("--api-key-env") { Description = "The environment variable holding the API key.", DefaultValueFactory = _ => "OPENAI_API_KEY" };
        readonly Option<string?> _local = new("--local") { Description = "Instead of an endpoint, an exported model folder (model.onnx), run on the CPU." };
        readonly Option<int> _threads = new("--threads") { Description = "--local: ONNX Runtime CPU threads (0: one per core)." };
        readonly Option<string?> _system = new("--system") { Description = "A system message sent with every request." };
        readonly Option<int> _maxTokens = new("--max-tokens") { Description = "Longest reply, in tokens.", DefaultValueFactory = _ => Defaults.MaxOutputTokens };
        readonly Option<float> _temperature = new("--temperature") { Description = "Sampling temperature (0: the same answers on a rerun).", DefaultValueFactory = _ => Defaults.Temperature };
        readonly Option<int> _concurrency = new("--concurrency") { Description = "Requests in flight at once.", DefaultValueFactory = _ => Defaults.Concurrency };
        readonly Option<int> _retries = new("--retries") { Description = "Retries of a request on 429 or 5xx (exponential backoff with jitter).", DefaultValueFactory = _ => Defaults.MaxRetries };

        public IEnumerable<Option> All => [_endpoint, _model, _keyEnv, _local, _threads, _system, _maxTokens, _temperature, _concurrency, _retries];

        public PairGatheringOptions Requests(ParseResult r) => new()
        {
            SystemPrompt = r.GetValue(_system), MaxOutputTokens = r.GetValue(_maxTokens), Temperature = r.GetValue(_temperature),
            Concurrency = r.GetValue(_concurrency), MaxRetries = r.GetValue(_retries),
        };

        public IChatClient Client(ParseResult r, TextWriter output)
        {
            string? endpoint = r.GetValue(_endpoint), local = r.GetValue(_local);
            if ((endpoint == null) == (local == null)) throw new ArgumentException("Give the model as --endpoint URL --model NAME or as --local FOLDER (one of them).");
            if (local != null) return new OnnxChatClient(OnnxCausalLM.Load(local, "cpu", r.GetValue(_threads)), ownsModel: true);
            string model = r.GetValue(_model) ?? throw new ArgumentException("--endpoint needs --model NAME (the model to ask at that endpoint).");
            if (!Uri.TryCreate(endpoint, UriKind.Absolute, out var uri)) throw new ArgumentException($"--endpoint '{endpoint}' is not an absolute URL (e.g. http://localhost:8000/v1).");
            string keyEnv = r.GetValue(_keyEnv)!;
            string? key = Environment.GetEnvironmentVariable(keyEnv);
            if (string.IsNullOrEmpty(key))
            {
                output.WriteLine($"note: ${keyEnv} is not set; sending a placeholder key (enough for a local server that checks none)");
                key = "no-key";
            }
            // Retries are PairGatherer's (counted, with jitter); the OpenAI client's own would retry unseen beneath them.
            var options = new OpenAIClientOptions { Endpoint = uri, RetryPolicy = new ClientRetryPolicy(maxRetries: 0) };
            return new OpenAI.Chat.ChatClient(model, new ApiKeyCredential(key), options).AsIChatClient();
        }
    }

    // Where inputs come from, shared by try and generate.
    sealed class Source
    {
        readonly Option<string?> _inputs = new("--inputs") { Description = "Inputs for the model to answer (.jsonl or .csv), rendered through --template." };
        readonly Option<string?> _template = new("--template", "--prompt") { Description = "What each input becomes, with {field} placeholders, e.g. \"Passage: {passage}\\nQuestion: {question}\" (\\n is a new line). Default {question}." };
        readonly Option<string?> _docs = new("--docs") { Description = "Documents for the model to write pairs about: a corpus file, folder or glob (.jsonl[.gz|.zst], .txt)." };
        readonly Option<string?> _task = new("--task") { Description = "--docs: a text file saying what the pairs are for." };
        readonly Option<string> _textField = new("--text-field") { Description = "--docs: the JSON field holding a document's text.", DefaultValueFactory = _ => "text" };
        readonly Option<int> _perDocument = new("--pairs-per-doc") { Description = "--docs: pairs to ask for per document.", DefaultValueFactory = _ => Defaults.PairsPerDocument };

        public IEnumerable<Option> All => [_inputs, _template, _docs, _task, _textField, _perDocument];

        public PairGatheringOptions Apply(PairGatheringOptions options, ParseResult r)
        {
            string? docs = r.GetValue(_docs), task = r.GetValue(_task);
            if (docs != null && r.GetValue(_template) != null) throw new ArgumentException("--template renders --inputs; with --docs, say what the pairs are for with --task FILE.");
            if (task != null && !File.Exists(task)) throw new FileNotFoundException($"Task file '{task}' does not exist.", task);
            return options with
            {
                InputsPath = r.GetValue(_inputs),
                InputTemplate = r.GetValue(_template) is { } t ? new PromptTemplate(t.Replace("\\n", "\n")) : Defaults.InputTemplate,
                Documents = docs == null ? null : new CorpusOptions { Path = docs, TextField = r.GetValue(_textField)! },
                Task = task == null ? null : File.ReadAllText(task),
                PairsPerDocument = r.GetValue(_perDocument),
            };
        }
    }
}
