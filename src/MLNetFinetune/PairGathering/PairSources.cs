using System.Text.Json;
using Microsoft.Extensions.AI;
using MLNetFinetune.Data;

namespace MLNetFinetune.PairGathering;

/// <summary>One input or document: its place in the source (the resume key), where it comes from, and its text.</summary>
internal sealed record SourceItem(long Index, string Source, string Text);

/// <summary>The candidate pairs one input gave, before the filter, with the reply when it gave none.</summary>
internal sealed record Candidates(IReadOnlyList<(string Question, string Answer, bool Cut)> Pairs, int Malformed, string? MalformedReply);

/// <summary>Where inputs come from and how each becomes a request and candidate pairs: inputs to answer, or documents to write pairs about.</summary>
internal abstract class PairSource
{
    public abstract string Mode { get; }

    public abstract string Path { get; }

    /// <summary>The text that decides what is asked, hashed into the prompt hash.</summary>
    public abstract string PromptText { get; }

    /// <summary>How many items the source holds (stopping at <paramref name="limit"/>).</summary>
    public abstract long Count(long limit);

    /// <summary>The items in their fixed order.</summary>
    public abstract IEnumerable<SourceItem> Items();

    /// <summary>What the model is asked about <paramref name="item"/>.</summary>
    public abstract string Request(SourceItem item);

    /// <summary>Asks about one item and returns its candidate pairs.</summary>
    public abstract Task<Candidates> AskAsync(ModelCalls calls, SourceItem item, CancellationToken cancellationToken);

    public static PairSource Create(PairGatheringOptions options)
    {
        if ((options.InputsPath == null) == (options.Documents == null))
            throw new ArgumentException("Give the inputs to answer (InputsPath, --inputs) or the documents to write pairs about (Documents, --docs), one of them.", nameof(options));
        if (options.InputsPath != null) return new Inputs(options.InputsPath, options.InputTemplate);
        if (string.IsNullOrWhiteSpace(options.Task))
            throw new ArgumentException("Documents need a task: say in words what the pairs are for (Task, --task FILE).", nameof(options));
        if (options.PairsPerDocument < 1) throw new ArgumentOutOfRangeException(nameof(options), options.PairsPerDocument, "PairsPerDocument must be at least 1.");
        return new Documents(options.Documents!, options.Task, options.PairsPerDocument, options.MaxDocumentChars);
    }

    // Whether the model stopped at the token limit: the answer was cut (the OpenAI client says so; local models do not).
    protected static bool Cut(ChatResponse response) => response.FinishReason == ChatFinishReason.Length;

    /// <summary>Distillation: each input rendered through the template is asked as it is, and the answer is the pair's.</summary>
    sealed class Inputs(string path, PromptTemplate template) : PairSource
    {
        readonly Lazy<(Microsoft.Data.Analysis.DataFrame Frame, List<long> Lines)> _data = new(() =>
        {
            var lines = new List<long>();
            return (InstructionData.LoadFields(path, template.Columns.ToList(), lines), lines);
        });

        public override string Mode => "inputs";
        public override string Path => path;
        public override string PromptText => template.Text + "\0" + template.WhenEmptyColumn + "\0" + template.WhenEmptyTemplate?.Text;
        public override long Count(long limit) => Math.Min(limit, _data.Value.Frame.Rows.Count);

        public override IEnumerable<SourceItem> Items()
        {
            var (frame, lines) = _data.Value;
            for (int i = 0; i < frame.Rows.Count; i++)
            {
                var row = frame.Rows[i];
                yield return new SourceItem(i, $"{path}:{lines[i]}", template.Format(name => ((string)row[name]).AsMemory()));
            }
        }

        public override string Request(SourceItem item) => item.Text;

        public override async Task<Candidates> AskAsync(ModelCalls calls, SourceItem item, CancellationToken cancellationToken)
        {
            var response = await calls.AskAsync(calls.Messages(item.Text), cancellationToken);
            return new Candidates([(item.Text, response.Text.Trim(), Cut(response))], 0, null);
        }
    }

    /// <summary>
    /// Self-instruct: the model reads each document and writes question/answer pairs as JSON. A reply that is not that
    /// JSON is asked about once more, with the reply and what is wrong with it, before the document is counted malformed.
    /// </summary>
    sealed class Documents(CorpusOptions corpus, string task, int perDocument, int maxChars) : PairSource
    {
        public override string Mode => "docs";
        public override string Path => corpus.Path;
        public override string PromptText => $"{task}\0{perDocument}\0{maxChars}\0{Instruction}";

        string Instruction => $"Write {perDocument} question/answer pair{(perDocument == 1 ? "" : "s")} about the document above. " +
            "Reply with JSON only, no other text: an array of objects with the string fields \"question\" and \"answer\", " +
            "like [{\"question\": \"...\", \"answer\": \"...\"}].";

        public override long Count(long limit)
        {
            using var reader = Reader();
            long n = 0;
            while (n < limit && reader.MoveNext()) n++;
            return n;
        }

        public override IEnumerable<SourceItem> Items()
        {
            using var reader = Reader();
            for (long i = 0; reader.MoveNext(); i++)
                yield return new SourceItem(i, $"{reader.File}:{reader.Line}", reader.Text.Length <= maxChars ? reader.Text : reader.Text[..maxChars]);
        }

        CorpusReader Reader() => new(corpus, DataFiles.Resolve(corpus.Path, CorpusOptions.SupportedExtensions), []);

        public override string Request(SourceItem item) => $"{task.Trim()}\n\nDocument:\n\"\"\"\n{item.Text}\n\"\"\"\n\n{Instruction}";

        public override async Task<Candidates> AskAsync(ModelCalls calls, SourceItem item, CancellationToken cancellationToken)
        {
            var messages = calls.Messages(Request(item));
            var response = await calls.AskAsync(messages, cancellationToken);
            string? problem = Parse(response.Text, out var pairs);
            if (problem == null) return new Candidates(pairs, 0, null);
            messages.Add(new ChatMessage(ChatRole.Assistant, response.Text));
            messages.Add(new ChatMessage(ChatRole.User, $"That reply cannot be read: {problem}. Reply again with only the JSON array of {{\"question\", \"answer\"}} objects."));
            response = await calls.AskAsync(messages, cancellationToken);
            problem = Parse(response.Text, out pairs);
            return problem == null ? new Candidates(pairs, 1, null) : new Candidates([], 2, response.Text);
        }

        // The pairs in a reply (a fenced code block or text around the array is allowed), or what is wrong with it.
        string? Parse(string reply, out List<(string, string, bool)> pairs)
        {
            pairs = [];
            int start = reply.IndexOf('['), end = reply.LastIndexOf(']');
            if (start < 0 || end < start) return "it holds no JSON array";
            JsonDocument document;
            try
            {
                document = JsonDocument.Parse(reply.AsMemory(start, end - start + 1));
            }
            catch (JsonException e)
            {
                return $"malformed JSON ({DataFileException.JsonReason(e)})";
            }
            using (document)
            {
                int n = 0;
                foreach (var item in document.RootElement.EnumerateArray())
                {
                    n++;
                    if (item.ValueKind != JsonValueKind.Object || !item.TryGetProperty("question", out var q) || q.ValueKind != JsonValueKind.String
                        || !item.TryGetProperty("answer", out var a) || a.ValueKind != JsonValueKind.String)
                        return $"item {n} is not an object with string fields \"question\" and \"answer\"";
                    if (pairs.Count < perDocument) pairs.Add((q.GetString()!.Trim(), a.GetString()!.Trim(), false));
                }
            }
            return null;
        }
    }
}
