// The course's first lab over real HTTP, offline: (1) prompt-engineer a large model to find a task it does well enough,
// (2) gather input/output pairs of that task from it, (3) finetune a small model on them. Offline there is no large model,
// so the quickstart's finetuned model plays the teacher (it reads passages: about 96% exact match on entities it was never
// finetuned on), served by the OpenAI-compatible server inside this process; the program talks to it only through the
// official OpenAI client, as it would to a hosted model.
//
//   dotnet run --project src/MLNetFinetune.Cli -c Release -- quickstart   (once: it exports the teacher)
//   dotnet run --project examples/06-GatherPairs -c Release
using System.ClientModel;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.Data.Analysis;
using Microsoft.Extensions.AI;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;
using MLNetFinetune.Generation;
using MLNetFinetune.PairGathering;
using MLNetFinetune.Server;
using MLNetFinetune.TorchSharp.Training;
using OpenAI;

var clock = Stopwatch.StartNew();
var ml = new MLContext(seed: 0);
string output = ExamplePaths.Output("06-GatherPairs");
Directory.CreateDirectory(output);
// SQuAD-style comparison, as the quickstart and `pairs score` compare: case, punctuation and spacing ignored.
var sameAnswer = new AnswerNormalization { IgnoreCase = true, IgnorePunctuation = true };

// 1. The teacher: an exported model behind an OpenAI-compatible endpoint on a free port of this machine.
ExamplePaths.Heading("1. The teacher, behind an OpenAI-compatible endpoint");
string teacherFolder = Path.Combine("runs", "quickstart", "onnx");
if (!File.Exists(Path.Combine(teacherFolder, "model.onnx")))
    throw new DirectoryNotFoundException($"'{teacherFolder}' does not exist yet: the teacher is the quickstart's ONNX export; run " +
        "`dotnet run --project src/MLNetFinetune.Cli -c Release -- quickstart` from the repository first.");
await using var teacher = await OpenAIServer.StartAsync(new ServerOptions
{
    Folder = teacherFolder, Port = 0, Provider = "cpu", Threads = Environment.ProcessorCount,
});
IChatClient chat = new OpenAI.Chat.ChatClient(teacher.ModelId, new ApiKeyCredential("unused"),
    new OpenAIClientOptions { Endpoint = new Uri(teacher.Address, "/v1") }).AsIChatClient();
Console.WriteLine($"teacher: {teacherFolder} served at {new Uri(teacher.Address, "/v1")} as model \"{teacher.ModelId}\" ({teacher.Provider})");
Console.WriteLine("A hosted model is asked the same way: the same client with its endpoint, model and key (OpenAI: https://api.openai.com/v1; " +
    "Ollama: http://localhost:11434/v1). From the CLI: `mlnet-finetune serve runs/quickstart/onnx`, then " +
    "`mlnet-finetune pairs try|generate|score --endpoint http://localhost:8000/v1 --model onnx …`.");
// What every request shares (try, score, gather): greedy decoding, so a rerun asks for and gets the same answers; and
// short answers (the gold ones are a few words; one that rambles past 16 tokens is cut, and gathering drops it as too long).
var requests = new PairGatheringOptions { MaxOutputTokens = 16, Temperature = 0, Concurrency = 8 };

// 2. The inputs: held-out extraction questions, about entities the teacher was never finetuned on. Split by entity, not
// by row, so the student is scored on entities none of whose questions it was finetuned on; ordinal order, then a seeded
// shuffle, gives the same split on every machine.
ExamplePaths.Heading("2. Inputs: held-out extraction questions, split by entity");
var heldOut = ml.Data.LoadInstructionData(ExamplePaths.Data(Path.Combine("facts", "heldout.jsonl")),
    new InstructionDataOptions { ExtraFields = ["kind", "entity", "attribute"] });
var extraction = heldOut.Rows.Where(r => (string)r["kind"] == "extraction").Select(r =>
{
    // "Passage: …\nWhat is …?": kept as two fields, so a candidate prompt can give the passage or leave it out.
    string[] parts = ((string)r["question"]).Split('\n', 2);
    return new Row(parts[0]["Passage: ".Length..], parts[1], (string)r["answer"], (string)r["entity"], (string)r["attribute"]);
}).ToList();
string[] entities = [.. extraction.Select(r => r.Entity).Distinct().Order(StringComparer.Ordinal)];
new Random(0).Shuffle(entities);
var gatherEntities = new HashSet<string>();
foreach (string entity in entities)
{
    if (extraction.Count(r => gatherEntities.Contains(r.Entity)) >= 300) break;
    gatherEntities.Add(entity);
}
var gather = extraction.Where(r => gatherEntities.Contains(r.Entity)).ToList();
var eval = extraction.Where(r => !gatherEntities.Contains(r.Entity)).ToList();
string inputsPath = Path.Combine(output, "inputs.jsonl");
ml.Data.SaveAsJsonl(Fields(gather), inputsPath);
Console.WriteLine($"{extraction.Count} extraction questions about {entities.Length} held-out entities: {gather.Count} about {gatherEntities.Count} entities " +
    $"to gather pairs from ({inputsPath}), {eval.Count} about the other {entities.Length - gatherEntities.Count} to evaluate on");
Console.WriteLine($"an input's fields: passage \"{gather[0].Passage}\", query \"{gather[0].Query}\" (known answer \"{gather[0].Answer}\")");

// 3. Lab step 1, prompt engineering: the same inputs under three candidate prompts, the teacher's replies side by side.
ExamplePaths.Heading("3. Lab step 1: prompt engineering, three candidate tasks");
Candidate[] candidates =
[
    new("extraction", "the passage, then the question (reading)", new PromptTemplate("Passage: {passage}\n{query}")),
    new("recall", "the question alone (does the teacher know the fact?)", new PromptTemplate("{query}")),
    new("rephrased", "the passage under an instruction of our own", new PromptTemplate("Answer from the text in a few words.\nText: {passage}\nQuestion: {query}")),
];
const int tried = 3;
var replies = new List<IReadOnlyList<PromptTrial>>();
foreach (var c in candidates)
{
    replies.Add(await PairGatherer.TryAsync(chat, requests with { InputsPath = inputsPath, InputTemplate = c.Template }, tried));
    Console.WriteLine($"{c.Name,-10} {c.Why}: \"{c.Template.Text.Replace("\n", "\\n")}\"");
}
Console.WriteLine();
Console.WriteLine($"| input (as extraction asks it) | known answer | {string.Join(" | ", candidates.Select(c => c.Name))} |");
Console.WriteLine($"| --- | --- |{string.Concat(candidates.Select(_ => " --- |"))}");
for (int i = 0; i < tried; i++)
    Console.WriteLine($"| {Cell(replies[0][i].Input)} | {gather[i].Answer} | {string.Join(" | ", replies.Select(r => Cell(r[i].Output)))} |");

// A quick score on evidence before a long run: the same seeded sample of 40 gathering inputs under each prompt, the
// teacher's answers against the known ones (each candidate's questions with the known answers, as a pairs file).
const int sampled = 40;
Console.WriteLine();
Console.WriteLine($"| candidate | teacher's exact match, {sampled} sampled inputs | token F1 |");
Console.WriteLine("| --- | --- | --- |");
var scores = new Dictionary<Candidate, GenerationMetrics>();
Directory.CreateDirectory(Path.Combine(output, "candidates"));
foreach (var c in candidates)
{
    string knownPath = Path.Combine(output, "candidates", c.Name + ".jsonl");
    ml.Data.SaveAsJsonl(Pairs(gather, c.Template), knownPath);
    scores[c] = (await PairScorer.ScoreAsync(chat, knownPath, sampled, requests, seed: 0)).Metrics;
    Console.WriteLine($"| {c.Name} | {scores[c].ExactMatch} | {scores[c].TokenF1:F3} |");
}
// The task to distil is reading: the answer is in the input, so the pairs teach a behaviour the small model can use on
// entities it has never seen, not facts about particular ones. Of the candidates that give the passage, the teacher's best.
var picked = candidates.Where(c => c.Template.Placeholders.Contains("passage")).MaxBy(c => scores[c].ExactMatch.Value)!;
Console.WriteLine($"picked: {picked.Name} ({100 * scores[picked].ExactMatch.Value:F0}% on the sample), the best of the prompts that give the passage; " +
    "recall shows the teacher also knows these facts by heart, but pairs without the passage would teach facts, not reading");

// 4. Lab step 2, gathering: the teacher answers every gathering input under the picked prompt. A gathering run continues the
// pairs file it finds (its ledger says what was asked), which is what a long run against a paid endpoint needs; a lab
// should give the same numbers each time, so this one deletes the file and its ledger and asks everything again.
ExamplePaths.Heading($"4. Lab step 2: gathering {gather.Count} pairs from the teacher");
string pairsPath = Path.Combine(output, "pairs.jsonl");
File.Delete(pairsPath);
File.Delete(pairsPath + PairGatherer.LedgerSuffix);
DataFrame pairs = ml.Data.GeneratePairs(chat, requests with { InputsPath = inputsPath, InputTemplate = picked.Template, OutputPath = pairsPath }, out var report);
Console.WriteLine($"{pairs.Rows.Count} pairs kept of {report.Inputs} inputs in {report.Seconds:F2} s ({pairsPath}); rejected, by reason: " +
    string.Join(", ", report.Rejects.Select(p => $"{p.Key} {p.Value}")) + $"; retries {report.Retries}");
// The pairs are the teacher's labels, not gold: the student learns the teacher's mistakes with its answers.
var known = gather.ToDictionary(r => Question(picked.Template, r), r => r.Answer);
var labels = pairs.Rows.Select(p => new ScoredAnswer(known[(string)p["question"]], (string)p["answer"], null)).ToList();
var agreement = GenerationEvaluator.Score(labels, sameAnswer).ExactMatch;
Console.WriteLine($"the teacher's answers equal the known ones in {agreement} of the pairs");
var wrong = labels.Select((l, i) => (l, i)).Where(x => !x.l.IsExact(sameAnswer)).Take(3).ToList();
foreach (var (l, i) in wrong) Console.WriteLine($"  taught wrong: {Cell((string)pairs["question"][i])} → \"{l.Generated}\" (known: \"{l.Expected}\")");
for (int i = 0; i < 2; i++) Console.WriteLine($"  a pair: {Cell((string)pairs["question"][i])} → \"{pairs["answer"][i]}\" ({pairs["source"][i]})");

// 5. Lab step 3, finetuning: the bundled base model (pretrained on prose about the entities, never shown a question) on the
// gathered pairs through the ML.NET pipeline the quickstart uses, with its prompt format: "### Answer:" then the answer
// after a space (qa-inline), as the corpus states facts mid-sentence (" Lima", not "Lima"). A gentler run than the
// quickstart's (5e-4) suits 300 pairs: at 3e-4 for 120 steps (about 6 passes) the student matches the teacher; at 5e-4 for
// 200 steps (11 passes) it starts answering with the gathering entities' capitals ("Pretoria" for Pristina), about 88%.
ExamplePaths.Heading($"5. Lab step 3: finetuning the base model on the {pairs.Rows.Count} gathered pairs");
string baseModel = ExamplePaths.Model("facts-base");
var format = PromptTemplates.QuestionAnswerInline;
var render = ml.Transforms.Text.ApplyPromptFormat(format);
var scoring = new CausalLMScoringOptions
{
    TextColumnName = null, PromptColumnName = "Prompt", ResponseColumnName = "Response",
    Generation = new GenerationOptions { MaxNewTokens = 12 }, BatchSize = 32,
};
string runDirectory = Path.Combine(output, "finetune");
if (Directory.Exists(runDirectory)) Directory.Delete(runDirectory, recursive: true); // a fresh run, not a resumed one
var training = Stopwatch.StartNew();
var pipeline = render.Append(ml.CausalLM().Trainers.InstructionTune(new InstructionTuningOptions
{
    BaseModel = baseModel, OutputDirectory = runDirectory, BlockSize = 128, MicroBatchSize = 16, MaxSteps = 120, LearningRate = 3e-4,
    WarmupSteps = 10, EvalFraction = 0, GroupByLength = true, LogInterval = 25, Threads = Environment.ProcessorCount, Seed = 0, Device = "cpu",
    Generation = scoring.Generation, Format = format, Progress = new Lines(),
}));
using var student = pipeline.Fit(pairs).LastTransformer.WithScoring(scoring);
Console.WriteLine($"trained in {training.Elapsed.TotalSeconds:F1} s; model: {Path.Combine(runDirectory, "model")}");

// 6. Base, student and (for reference) teacher on the evaluation part, against the known answers.
ExamplePaths.Heading($"6. Teacher, base and student on {eval.Count} questions about {entities.Length - gatherEntities.Count} entities never gathered from");
string evalPath = Path.Combine(output, "eval.jsonl");
var evalRows = Pairs(eval, picked.Template);
ml.Data.SaveAsJsonl(evalRows, evalPath);
var teacherScore = await PairScorer.ScoreAsync(chat, evalPath, eval.Count, requests); // all rows, in file order
IDataView evalView = render.Fit(evalRows).Transform(evalRows);
using var baseline = CausalLMTransformer.Load(baseModel, scoring);
var comparison = ModelComparison.Compare(baseline.Transform(evalView), student.Transform(evalView), "question", "answer",
    normalization: sameAnswer, tunedName: "student");
comparison.WriteMarkdown(Path.Combine(output, "comparison.md"));
Console.WriteLine("| model | exact match | token F1 |");
Console.WriteLine("| --- | --- | --- |");
Console.WriteLine($"| teacher, over HTTP (reference) | {teacherScore.Metrics.ExactMatch} | {teacherScore.Metrics.TokenF1:F3} |");
Console.WriteLine($"| base (models/facts-base) | {comparison.Base.ExactMatch} | {comparison.Base.TokenF1:F3} |");
Console.WriteLine($"| student: base finetuned on the teacher's pairs | {comparison.Tuned.ExactMatch} | {comparison.Tuned.TokenF1:F3} |");
Console.WriteLine();
Console.WriteLine("| question | known answer | teacher | base | student |");
Console.WriteLine("| --- | --- | --- | --- | --- |");
for (int i = 0, shown = 5; i < shown; i++)
{
    int row = i * eval.Count / shown;
    var (t, c) = (teacherScore.Answers[row], comparison.Rows[row]);
    Console.WriteLine($"| {Cell(c.Question)} | {c.Expected} | {Mark(t.IsExact(sameAnswer))}{Cell(t.Generated)} | {Mark(c.BaseExact)}{Cell(c.BaseAnswer)} | {Mark(c.TunedExact)}{Cell(c.TunedAnswer)} |");
}
Console.WriteLine($"all rows: {Path.Combine(output, "comparison.md")}");
Console.WriteLine();
Console.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
{
    ["teacher_em"] = Math.Round(teacherScore.Metrics.ExactMatch.Value, 4),
    ["gathered_pairs"] = pairs.Rows.Count,
    ["teacher_agreement_with_gold"] = Math.Round(agreement.Value, 4),
    ["base_em"] = Math.Round(comparison.Base.ExactMatch.Value, 4),
    ["student_em"] = Math.Round(comparison.Tuned.ExactMatch.Value, 4),
    ["eval_rows"] = eval.Count,
    ["seconds"] = Math.Round(clock.Elapsed.TotalSeconds, 1),
}));

// The input fields, as the gathering reads them from inputs.jsonl.
static DataFrame Fields(IReadOnlyList<Row> rows) => new(
    new StringDataFrameColumn("passage", rows.Select(r => r.Passage)),
    new StringDataFrameColumn("query", rows.Select(r => r.Query)),
    new StringDataFrameColumn("answer", rows.Select(r => r.Answer)),
    new StringDataFrameColumn("entity", rows.Select(r => r.Entity)),
    new StringDataFrameColumn("attribute", rows.Select(r => r.Attribute)));

// Question/answer pairs with the known answers: the input as a prompt renders it, and what the answer should be.
static DataFrame Pairs(IReadOnlyList<Row> rows, PromptTemplate template) => new(
    new StringDataFrameColumn("question", rows.Select(r => Question(template, r))),
    new StringDataFrameColumn("answer", rows.Select(r => r.Answer)));

static string Question(PromptTemplate template, Row r) => template.Format(("passage", r.Passage), ("query", r.Query));

static string Mark(bool exact) => exact ? "✓ " : "";

static string Cell(string text)
{
    string flat = text.ReplaceLineEndings(" ").Replace("|", "\\|").Trim();
    return flat.Length > 80 ? flat[..77] + "…" : flat;
}

/// <summary>One held-out extraction question: its passage, the bare question, the known answer.</summary>
record Row(string Passage, string Query, string Answer, string Entity, string Attribute);

/// <summary>A candidate task: a name, what it asks, and the prompt each input becomes.</summary>
record Candidate(string Name, string Why, PromptTemplate Template);

/// <summary>Training progress, one line each as it comes (Progress&lt;T&gt; would post lines to the thread pool, out of order with the rest).</summary>
sealed class Lines : IProgress<TrainingProgress>
{
    public void Report(TrainingProgress value) => Console.WriteLine(value);
}
