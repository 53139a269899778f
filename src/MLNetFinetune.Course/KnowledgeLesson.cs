using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using MLNetFinetune.Course.Facts;
using MLNetFinetune.Data;
using MLNetFinetune.Evaluation;
using MLNetFinetune.Generation;
using MLNetFinetune.TorchSharp;
using MLNetFinetune.TorchSharp.Modeling;
using MLNetFinetune.TorchSharp.Training;

namespace MLNetFinetune.Course;

/// <summary>What a knowledge-editing finetuning trains on, and how.</summary>
public enum KnowledgeLever
{
    /// <summary>Each edited fact as one question, in the form the first lesson trained: what users usually try first.</summary>
    Plain,
    /// <summary>Each fact in several question forms and in prose statements (augmentation).</summary>
    Paraphrased,
    /// <summary>Paraphrased, mixed with as many rows of the first lesson's pairs and of prose about untouched facts (replay).</summary>
    ParaphrasedWithReplay,
    /// <summary>Paraphrased with replay, LoRA adapters instead of every weight.</summary>
    LoraParaphrasedWithReplay,
}

/// <summary>Options of <see cref="KnowledgeLesson"/>.</summary>
public sealed class KnowledgeLessonOptions
{
    /// <summary>The facts folder: <c>facts.csv</c>, <c>train.jsonl</c>, <c>heldout.jsonl</c> (the bundled <c>examples/data/facts</c>). Required.</summary>
    public required string Data { get; init; }

    /// <summary>The first lesson's finetuned model (it answers questions): the quickstart's <c>runs/quickstart/finetune/model</c>. Required.</summary>
    public required string TunedModel { get; init; }

    /// <summary>Output folder: one run per lever. Required.</summary>
    public required string Output { get; init; }

    /// <summary>Stored facts changed to another value. Default 24.</summary>
    public int ChangedFacts { get; init; } = 24;

    /// <summary>Made-up countries, four facts each. Default 8.</summary>
    public int NewEntities { get; init; } = 8;

    /// <summary>Optimizer steps per lever. Default 200.</summary>
    public int Steps { get; init; } = 200;

    /// <summary>
    /// Peak learning rate (the LoRA lever uses ten times it). Default 3e-4: at 5e-4 the edits were learnt as well but
    /// locality fell to 0.87–0.91 (seed 0); at 2e-4 the edits were no longer learnt (changed facts 0.83).
    /// </summary>
    public double LearningRate { get; init; } = 3e-4;

    /// <summary>Rows per step. Default 16.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>LoRA rank of the LoRA lever. Default 16.</summary>
    public int LoraRank { get; init; } = 16;

    /// <summary>Replay levers: replayed rows per row about the edits. Default 4 (1: locality 0.82; 3: 0.94).</summary>
    public double ReplayRatio { get; init; } = 4;

    /// <summary>Untouched facts of other entities probed for locality, and first-lesson pairs of each kind scored. Default 192.</summary>
    public int Probes { get; init; } = 192;

    /// <summary>The levers compared. Default: all.</summary>
    public IReadOnlyList<KnowledgeLever> Levers { get; init; } = Enum.GetValues<KnowledgeLever>();

    /// <summary>libtorch threads (0: all cores).</summary>
    public int Threads { get; init; }

    /// <summary><c>auto</c>, <c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public string Device { get; init; } = "auto";

    /// <summary>Seeds the edits, the data order and the weights of adapters. Default 0.</summary>
    public int Seed { get; init; }
}

/// <summary>One model's scores on the lesson's probes (exact match unless said; cloze: the continuation names the value).</summary>
public sealed record KnowledgeScores(Rate ChangedTrained, Rate ChangedParaphrase, Rate ChangedCloze, Rate OldValue, Rate NewTrained, Rate NewParaphrase,
    Rate NewCloze, Rate LocalitySameEntity, Rate LocalityOther, Rate Extraction, Rate Recall)
{
    /// <summary>Untouched facts the model knew before (by question or cloze) that it still knows, same and other entities together.</summary>
    public Rate Locality => new(LocalitySameEntity.Hits + LocalityOther.Hits, LocalitySameEntity.Count + LocalityOther.Count);

    // What "best" means: the edits learnt in every form, and nothing else broken.
    internal double Merit => new[] { ChangedTrained, ChangedParaphrase, NewTrained, NewParaphrase, Locality }.Average(r => r.Value);
}

/// <summary>The lesson's edits and numbers: the model before editing, each lever after, which lever did best, the time taken.</summary>
public sealed record KnowledgeLessonResult(IReadOnlyList<EditedFact> Edits, KnowledgeScores Before, IReadOnlyList<(KnowledgeLever Lever, KnowledgeScores Scores)> After, double Seconds)
{
    /// <summary>The lever with the best mean of changed and new exact match (trained and paraphrased forms) and locality.</summary>
    public (KnowledgeLever Lever, KnowledgeScores Scores) Best => After.MaxBy(a => a.Scores.Merit);

    /// <summary>The one-line JSON summary: the best lever's numbers, then every lever's.</summary>
    public string ToJson()
    {
        static Dictionary<string, object> Numbers(KnowledgeScores s) => new()
        {
            ["changed_trained_em"] = R(s.ChangedTrained), ["changed_paraphrase_em"] = R(s.ChangedParaphrase), ["changed_cloze"] = R(s.ChangedCloze),
            ["old_value_rate"] = R(s.OldValue), ["new_trained_em"] = R(s.NewTrained), ["new_paraphrase_em"] = R(s.NewParaphrase), ["new_cloze"] = R(s.NewCloze),
            ["locality"] = R(s.Locality), ["locality_same_entity"] = R(s.LocalitySameEntity), ["locality_other"] = R(s.LocalityOther),
            ["extraction_em"] = R(s.Extraction), ["recall_em"] = R(s.Recall),
        };
        var json = new Dictionary<string, object> { ["best_lever"] = Name(Best.Lever) };
        foreach (var (key, value) in Numbers(Best.Scores)) json[key] = value;
        json["before"] = Numbers(Before);
        json["levers"] = After.ToDictionary(a => Name(a.Lever), a => (object)Numbers(a.Scores));
        json["seconds"] = Math.Round(Seconds, 1);
        return JsonSerializer.Serialize(json);
    }

    /// <summary>A lever's name as the JSON and the table write it.</summary>
    public static string Name(KnowledgeLever lever) => lever switch
    {
        KnowledgeLever.Plain => "plain",
        KnowledgeLever.Paraphrased => "paraphrased",
        KnowledgeLever.ParaphrasedWithReplay => "paraphrased+replay",
        _ => "lora+paraphrased+replay",
    };

    static double R(Rate rate) => Math.Round(rate.Value, 4);
}

/// <summary>
/// The course's second lesson: finetuning that adds and corrects knowledge. Starting from the first lesson's finetuned
/// model, some facts it stored are changed (an "outdated" capital or currency) and made-up countries are added; each
/// lever finetunes a copy on them, and every model is asked the edited facts in the trained question form, in question
/// forms it never trained on, and as prose (cloze), with the old value counted, while untouched facts of the same and of
/// other countries show what else moved. The last line written is one JSON object.
/// </summary>
public static class KnowledgeLesson
{
    static readonly AnswerNormalization Normalization = new() { IgnoreCase = true, IgnorePunctuation = true };
    static readonly PromptFormat Format = PromptTemplates.QuestionAnswerInline;

    /// <summary>Runs the lesson, writing its steps and table to <paramref name="output"/>.</summary>
    public static KnowledgeLessonResult Run(KnowledgeLessonOptions s, TextWriter output, ILessonDisplay? display = null)
    {
        display ??= new LessonLines(output);
        var clock = Stopwatch.StartNew();
        var ml = new MLContext(seed: s.Seed);
        if (s.Threads > 0) global::TorchSharp.torch.set_num_threads(s.Threads);
        var table = FactTable.Load(Path.Combine(s.Data, "facts.csv"));
        var (train, heldOut) = FactPairs.Load(ml, s.Data);
        var scoring = new CausalLMScoringOptions { TextColumnName = null, Generation = new GenerationOptions { MaxNewTokens = 12 }, BatchSize = 32 };

        // 1. The model before: which facts of the first lesson's finetuning entities it answers, by question and by cloze.
        FactPairs.Heading(output, $"1. The first lesson's finetuned model ({s.TunedModel})");
        output.WriteLine($"device: {TorchRuntime.ChooseDevice(s.Device).Description}");
        using var before = CausalLMTransformer.Load(s.TunedModel, scoring, s.Device);
        var trainEntities = ((StringDataFrameColumn)train["entity"]).Distinct().ToHashSet();
        var countries = table.Entities.Where(e => e.Domain == "country" && trainEntities.Contains(e.Name)).ToArray();
        var candidates = countries.SelectMany(e => e.Facts).Where(f => f.Attribute is "capital" or "currency").ToArray();
        var known = display.Timed("stored facts", () => Knows(before, candidates));
        var stored = candidates.Where((_, i) => known[i]).ToArray();
        output.WriteLine($"{stored.Length} of {candidates.Length} capitals and currencies of {countries.Length} finetuning countries answered by question and by cloze");

        // 2. The edits and the probes.
        FactPairs.Heading(output, "2. Edits");
        var edits = KnowledgeEdits.Draw(table, stored, s.ChangedFacts, s.NewEntities, s.Seed);
        var changed = edits.Where(e => e.Changed).ToArray();
        var added = edits.Where(e => !e.Changed).ToArray();
        foreach (var e in changed.Take(3)) output.WriteLine($"changed: {Ask(e.Fact)} {e.Old} → {e.Fact.Value}");
        foreach (var e in added.Take(4)) output.WriteLine($"new:     {Ask(e.Fact)} → {e.Fact.Value}");
        output.WriteLine($"{changed.Length} changed facts, {added.Length} facts about {s.NewEntities} made-up countries");

        var editedEntities = edits.Select(e => e.Fact.Entity).ToHashSet();
        var editedFacts = changed.Select(e => (e.Fact.Entity, e.Fact.Attribute)).ToHashSet();
        var random = new Random(s.Seed + 1);
        var sameEntity = table.Entities.Where(e => editedEntities.Contains(e.Name)).SelectMany(e => e.Facts)
            .Where(f => !editedFacts.Contains((f.Entity, f.Attribute))).ToArray();
        var others = table.Entities.Where(e => !editedEntities.Contains(e.Name)).SelectMany(e => e.Facts).ToArray();
        random.Shuffle(others);
        others = others.Take(s.Probes).ToArray();
        var extraction = FactPairs.OfKind(heldOut, "extraction", s.Probes);
        var recall = FactPairs.OfKind(heldOut, "recall", s.Probes);
        var beforeScores = display.Timed("scoring before", () => Score(before, changed, added, sameEntity, others, null, extraction, recall));
        var knewSame = beforeScores.Knew.Same;
        var knewOther = beforeScores.Knew.Other;

        // 3. The levers, each a finetuning of the first lesson's model.
        var after = new List<(KnowledgeLever, KnowledgeScores)>();
        foreach (var lever in s.Levers)
        {
            FactPairs.Heading(output, $"3. Lever: {KnowledgeLessonResult.Name(lever)}");
            var rows = TrainingRows(lever, edits, train, s.ReplayRatio, table, s.Seed);
            output.WriteLine($"{rows.Rows.Count} training rows");
            string run = RunDirectory(s.Output, lever);
            if (Directory.Exists(run)) Directory.Delete(run, recursive: true);
            bool lora = lever == KnowledgeLever.LoraParaphrasedWithReplay;
            using var tuned = display.Train(KnowledgeLessonResult.Name(lever), progress => ml.CausalLM().Trainers.InstructionTune(new InstructionTuningOptions
            {
                BaseModel = s.TunedModel, OutputDirectory = run, BlockSize = 128, MicroBatchSize = s.BatchSize, MaxSteps = s.Steps,
                LearningRate = lora ? 10 * s.LearningRate : s.LearningRate, WarmupSteps = 10, EvalFraction = 0, LogInterval = 20, Threads = s.Threads,
                Seed = s.Seed, Device = s.Device, Format = Format, Progress = progress, CheckpointInterval = 0, KeepLastCheckpoints = 1,
                Lora = lora ? new LoraOptions { Rank = s.LoraRank, Alpha = 2 * s.LoraRank } : null,
            }).Fit(rows).WithScoring(scoring));
            var scores = display.Timed("scoring", () => Score(tuned, changed, added, sameEntity, others, (knewSame, knewOther), extraction, recall)).Scores;
            after.Add((lever, scores));
        }

        // 4. One table.
        FactPairs.Heading(output, "4. What each lever buys");
        output.WriteLine("| | before | " + string.Join(" | ", after.Select(a => KnowledgeLessonResult.Name(a.Item1))) + " |");
        output.WriteLine("| --- | --- |" + string.Concat(after.Select(_ => " --- |")));
        var rowsShown = new List<(string Name, Func<KnowledgeScores, Rate> Pick)>();
        void Line(string name, Func<KnowledgeScores, Rate> pick)
        {
            rowsShown.Add((name, pick));
            output.WriteLine($"| {name} | {Percent(pick(beforeScores.Scores))} | " + string.Join(" | ", after.Select(a => Percent(pick(a.Item2)))) + " |");
        }
        Line("changed facts, trained question", x => x.ChangedTrained);
        Line("changed facts, paraphrased questions", x => x.ChangedParaphrase);
        Line("changed facts, prose (cloze)", x => x.ChangedCloze);
        Line("changed facts, old value still given", x => x.OldValue);
        Line("new facts, trained question", x => x.NewTrained);
        Line("new facts, paraphrased questions", x => x.NewParaphrase);
        Line("new facts, prose (cloze)", x => x.NewCloze);
        Line("locality: other facts of edited countries", x => x.LocalitySameEntity);
        Line("locality: facts of other entities", x => x.LocalityOther);
        Line("first lesson: extraction", x => x.Extraction);
        Line("first lesson: recall", x => x.Recall);

        var result = new KnowledgeLessonResult(edits, beforeScores.Scores, after, clock.Elapsed.TotalSeconds);
        output.WriteLine();
        output.WriteLine($"best lever: {KnowledgeLessonResult.Name(result.Best.Lever)} (the best mean of changed and new facts, trained and paraphrased, and locality)");
        foreach (var (name, pick) in rowsShown) output.WriteLine($"  {name}: {pick(result.Best.Scores)}");
        output.WriteLine(result.ToJson());
        return result;
    }

    /// <summary>Where a lever's run (its <c>model/</c>, <c>metrics.csv</c>) is written under the lesson's output folder.</summary>
    public static string RunDirectory(string output, KnowledgeLever lever) => Path.Combine(output, KnowledgeLessonResult.Name(lever).Replace('+', '-'));

    static string Ask(Fact fact) => FactTemplates.For(fact.Domain, fact.Attribute).Ask(fact);

    static string Prompt(string question) => Format.Prompt.Format(("question", question));

    static string Percent(Rate rate) => rate.Count == 0 ? "–" : string.Create(CultureInfo.InvariantCulture, $"{100 * rate.Value:F0}% ({rate.Hits}/{rate.Count})");

    // Per fact: answered by its trained question and by its cloze.
    static bool[] Knows(CausalLMTransformer model, IReadOnlyList<Fact> facts)
    {
        var byQuestion = Answers(model, facts.Select(f => Prompt(Ask(f))).ToList());
        var byCloze = Answers(model, facts.Select(f => FactTemplates.For(f.Domain, f.Attribute).Cloze(f)).ToList());
        return facts.Select((f, i) => Exact(byQuestion[i], f.Value) && ClozeEvaluator.IsHit(byCloze[i], f.Value)).ToArray();
    }

    static IReadOnlyList<string> Answers(CausalLMTransformer model, IReadOnlyList<string> prompts) =>
        model.Generate(prompts, new GenerationOptions { MaxNewTokens = 12 });

    static bool Exact(string generated, string expected) => new ScoredAnswer(expected, generated, null).IsExact(Normalization);

    sealed record Scored(KnowledgeScores Scores, (bool[] Same, bool[] Other) Knew);

    // Every probe in one batched pass per kind. `knew` (the model before's hits on untouched facts) turns those probes
    // into locality: of what was known before, the share still known; null scores the model before itself.
    static Scored Score(CausalLMTransformer model, IReadOnlyList<EditedFact> changed, IReadOnlyList<EditedFact> added, IReadOnlyList<Fact> sameEntity,
        IReadOnlyList<Fact> others, (bool[] Same, bool[] Other)? knew, DataFrame extraction, DataFrame recall)
    {
        // The trained question's answers, generated once, scored against each value asked for (the new one, the old one).
        Rate[] Trained(IReadOnlyList<EditedFact> edits, params Func<EditedFact, string>[] values)
        {
            var answers = Answers(model, edits.Select(e => Prompt(Ask(e.Fact))).ToList());
            return values.Select(value => new Rate(edits.Where((e, i) => Exact(answers[i], value(e))).Count(), edits.Count)).ToArray();
        }
        Rate Paraphrased(IReadOnlyList<EditedFact> edits)
        {
            var asked = edits.SelectMany(e => KnowledgeForms.Testing(e.Fact.Attribute).Select(q => (e.Fact.Value, Prompt(AttributeTemplates.Fill(q, e.Fact))))).ToList();
            var answers = Answers(model, asked.Select(a => a.Item2).ToList());
            return new Rate(asked.Where((a, i) => Exact(answers[i], a.Value)).Count(), asked.Count);
        }
        Rate Cloze(IReadOnlyList<EditedFact> edits) => ClozeEvaluator.Evaluate(
            edits.Select(e => new ClozeItem(FactTemplates.For(e.Fact.Domain, e.Fact.Attribute).Cloze(e.Fact), e.Fact.Value)).ToList(), prompts => Answers(model, prompts));
        Rate Pairs(DataFrame rows)
        {
            var answers = Answers(model, rows.Rows.Select(r => Prompt((string)r["question"])).ToList());
            return new Rate(rows.Rows.Select((r, i) => Exact(answers[i], (string)r["answer"])).Count(x => x), rows.Rows.Count);
        }
        var same = Knows(model, sameEntity);
        var other = Knows(model, others);
        Rate Kept(bool[] now, bool[] then) => new(now.Where((k, i) => k && then[i]).Count(), then.Count(k => k));
        var changedRates = Trained(changed, e => e.Fact.Value, e => e.Old!);
        var scores = new KnowledgeScores(
            changedRates[0], Paraphrased(changed), Cloze(changed), changedRates[1],
            Trained(added, e => e.Fact.Value)[0], Paraphrased(added), Cloze(added),
            Kept(same, knew?.Same ?? same), Kept(other, knew?.Other ?? other), Pairs(extraction), Pairs(recall));
        return new Scored(scores, (same, other));
    }

    // The lever's training rows, as Prompt/Response columns in the first lesson's format.
    static DataFrame TrainingRows(KnowledgeLever lever, IReadOnlyList<EditedFact> edits, DataFrame firstLesson, double replayRatio, FactTable table, int seed)
    {
        var prompts = new List<string>();
        var responses = new List<string>();
        void Pair(string question, string answer)
        {
            prompts.Add(Prompt(question));
            responses.Add(Format.Response.Format(("answer", answer)));
        }
        // Prose: the statement cut before the value is the prompt, the value and the rest of the sentence the response.
        void Prose(Fact fact, string template)
        {
            string text = AttributeTemplates.Fill(template, fact), prefix = AttributeTemplates.Prefix(template, fact);
            prompts.Add(prefix);
            responses.Add(text[prefix.Length..]);
        }
        foreach (var e in edits)
        {
            Pair(Ask(e.Fact), e.Fact.Value);
            if (lever == KnowledgeLever.Plain) continue;
            foreach (string form in KnowledgeForms.Augmenting(e.Fact.Attribute)) Pair(AttributeTemplates.Fill(form, e.Fact), e.Fact.Value);
            foreach (string statement in FactTemplates.For(e.Fact.Domain, e.Fact.Attribute).Statements) Prose(e.Fact, statement);
        }
        if (lever is KnowledgeLever.ParaphrasedWithReplay or KnowledgeLever.LoraParaphrasedWithReplay)
        {
            // Replay: replayRatio rows per edit row, half the first lesson's pairs, half prose about untouched facts as the
            // pretraining corpus states them; never an edited fact (it would teach the old value back), but the edited
            // countries' other facts are replayed like any other, which anchors what should not move.
            var random = new Random(seed + 2);
            int count = (int)(prompts.Count * replayRatio);
            var edited = edits.Select(e => (e.Fact.Entity, e.Fact.Attribute)).ToHashSet();
            var pairs = firstLesson.Rows.Where(r => !edited.Contains(((string)r["entity"], (string)r["attribute"]))).ToArray();
            random.Shuffle(pairs);
            foreach (var row in pairs.Take(count / 2)) Pair((string)row["question"], (string)row["answer"]);
            var prose = table.Facts.Where(f => !edited.Contains((f.Entity, f.Attribute))).ToArray();
            random.Shuffle(prose);
            foreach (var fact in prose.Take(count - count / 2))
            {
                var statements = FactTemplates.For(fact.Domain, fact.Attribute).Statements;
                Prose(fact, statements[random.Next(statements.Count)]);
            }
        }
        return new DataFrame(new StringDataFrameColumn("Prompt", prompts), new StringDataFrameColumn("Response", responses));
    }
}
