using System.Text;
using System.Text.Json;
using MLNetFinetune.Data;

namespace MLNetFinetune.Course.Facts;

/// <summary>The two kinds of question the course distinguishes.</summary>
public enum FactQuestionKind
{
    /// <summary>Behaviour: the prompt holds a passage that states the fact; the answer is read from it.</summary>
    Extraction,
    /// <summary>Knowledge: only the question; the fact must come from what the model learnt in pretraining.</summary>
    Recall,
}

/// <summary>A question about one fact, with its answer and the prose (cloze) prompt that probes the same fact.</summary>
public sealed record FactQuestion(FactQuestionKind Kind, string Domain, string Entity, string Attribute, string Question, string Answer, string Cloze);

/// <summary>Which entities the finetuning sees and which are held out for evaluation.</summary>
public sealed record FactSplit(IReadOnlyList<FactEntity> Train, IReadOnlyList<FactEntity> HeldOut);

/// <summary>Options of <see cref="FactDatasets"/>.</summary>
public sealed class FactDatasetOptions
{
    /// <summary>Share of each domain's entities held out from finetuning. Default 0.3.</summary>
    public double HeldOutFraction { get; init; } = 0.3;

    /// <summary>Passes over the table in the knowledge corpus; each states every fact once, in fresh wording and order. Default 40.</summary>
    public int CorpusRounds { get; init; } = 40;

    /// <summary>Entity paragraphs (or question blocks) per corpus document. Default 4.</summary>
    public int ParagraphsPerDocument { get; init; } = 4;

    /// <summary>
    /// Mix question/answer blocks ("Q: … A: …") about the finetuning entities into the corpus: the "mixed training" of
    /// Allen-Zhu and Li, which teaches the model during pretraining that stored facts are asked for, and is what lets
    /// question answering carry over to entities it only read about. Held-out entities never appear as questions.
    /// Default true.
    /// </summary>
    public bool MixQuestionsIntoCorpus { get; init; } = true;

    /// <summary>
    /// Extraction entities per finetuning entity (see <see cref="FactDatasets.ExtractionEntities"/>). Many distinct
    /// passages, each seen a few times, make the model learn to copy from the passage; a quarter as many, seen four
    /// times as often, get memorised instead. Default 4.
    /// </summary>
    public int ExtractionEntitiesPerTrainEntity { get; init; } = 4;

    /// <summary>Seed of the split, the wording and the order. Default 0.</summary>
    public int Seed { get; init; }
}

/// <summary>
/// Turns a <see cref="FactTable"/> into the quickstart's data: a knowledge corpus to pretrain on (every fact stated
/// many times in varied templates and order, mixed into documents) and question/answer pairs of both kinds, split by
/// entity so evaluation asks about entities the finetuning never saw.
/// </summary>
public sealed class FactDatasets
{
    readonly FactTable _table;
    readonly FactDatasetOptions _options;

    /// <summary>Splits the table's entities (per domain, seeded) and prepares the generators.</summary>
    public FactDatasets(FactTable table, FactDatasetOptions? options = null)
    {
        _table = table;
        _options = options ?? new FactDatasetOptions();
        if (_options.HeldOutFraction is <= 0 or >= 1)
            throw new ArgumentOutOfRangeException(nameof(options), _options.HeldOutFraction, "HeldOutFraction must be between 0 and 1 (exclusive).");
        if (_options.CorpusRounds < 1 || _options.ParagraphsPerDocument < 1 || _options.ExtractionEntitiesPerTrainEntity < 1)
            throw new ArgumentOutOfRangeException(nameof(options), "CorpusRounds, ParagraphsPerDocument and ExtractionEntitiesPerTrainEntity must be at least 1.");
        var random = new Random(_options.Seed);
        var train = new List<FactEntity>();
        var heldOut = new List<FactEntity>();
        foreach (var domain in table.Entities.GroupBy(e => e.Domain))
        {
            var entities = domain.ToArray();
            random.Shuffle(entities);
            int held = Math.Max(1, (int)Math.Round(entities.Length * _options.HeldOutFraction));
            heldOut.AddRange(entities[..held]);
            train.AddRange(entities[held..]);
        }
        Split = new FactSplit(train, heldOut);
        ExtractionEntities = Invent(table, train, _options.ExtractionEntitiesPerTrainEntity, new Random(_options.Seed + 4));
    }

    /// <summary>The entity split.</summary>
    public FactSplit Split { get; }

    /// <summary>
    /// The entities of the finetuning's extraction pairs: made-up ones ("Tavrinia", "Kalomium"), each shaped like a real
    /// entity of its domain with values borrowed from others, <see cref="FactDatasetOptions.ExtractionEntitiesPerTrainEntity"/>
    /// per finetuning entity. The model cannot answer these from memory, so it learns to read the passage; with passages
    /// about entities it knows it learns to answer from memory and copies badly (measured: 76% against 94% on held-out
    /// extraction), and passages that contradict its memory ("the government of Peru sits in Oslo") teach it to read but
    /// erase what it knew (recall 55% against 76%).
    /// </summary>
    public IReadOnlyList<FactEntity> ExtractionEntities { get; }

    /// <summary>The finetuning pairs: extraction about <see cref="ExtractionEntities"/>, recall about the finetuning entities.</summary>
    public IEnumerable<FactQuestion> TrainPairs() =>
        Questions(ExtractionEntities, FactQuestionKind.Extraction).Concat(Questions(Split.Train, FactQuestionKind.Recall));

    /// <summary>The evaluation pairs: both kinds about the held-out entities.</summary>
    public IEnumerable<FactQuestion> HeldOutPairs() =>
        Questions(Split.HeldOut, FactQuestionKind.Extraction).Concat(Questions(Split.HeldOut, FactQuestionKind.Recall));

    /// <summary>The knowledge corpus, one document per string (deterministic for a seed).</summary>
    public IEnumerable<string> CorpusDocuments()
    {
        var random = new Random(_options.Seed + 1);
        var trainNames = Split.Train.Select(e => (e.Domain, e.Name)).ToHashSet();
        for (int round = 0; round < _options.CorpusRounds; round++)
        {
            var paragraphs = new List<string>();
            foreach (var entity in _table.Entities)
            {
                paragraphs.Add(Paragraph(entity, random));
                if (_options.MixQuestionsIntoCorpus && trainNames.Contains((entity.Domain, entity.Name)))
                    paragraphs.Add(QuestionBlock(entity, random));
            }
            var order = paragraphs.ToArray();
            random.Shuffle(order);
            for (int i = 0; i < order.Length; i += _options.ParagraphsPerDocument)
                yield return string.Join("\n\n", order.Skip(i).Take(_options.ParagraphsPerDocument));
        }
    }

    /// <summary>Questions of one kind about the given entities, one per fact (deterministic for a seed).</summary>
    public IReadOnlyList<FactQuestion> Questions(IEnumerable<FactEntity> entities, FactQuestionKind kind)
    {
        var random = new Random(_options.Seed + 2 + (int)kind);
        var questions = new List<FactQuestion>();
        foreach (var entity in entities)
            foreach (var fact in entity.Facts)
            {
                var templates = FactTemplates.For(fact.Domain, fact.Attribute);
                string question = templates.Ask(fact);
                if (kind == FactQuestionKind.Extraction)
                    question = $"Passage: {Passage(entity, fact, random)}\n{question}";
                questions.Add(new FactQuestion(kind, fact.Domain, fact.Entity, fact.Attribute, question, fact.Value, templates.Cloze(fact)));
            }
        return questions;
    }

    /// <summary>Writes <c>corpus.jsonl.zst</c>, <c>train.jsonl</c> (both kinds, finetuning entities) and <c>heldout.jsonl</c> into a folder; returns the three paths.</summary>
    public (string Corpus, string Train, string HeldOut) WriteTo(string folder)
    {
        string corpus = Path.Combine(folder, "corpus.jsonl.zst"), train = Path.Combine(folder, "train.jsonl"), heldOut = Path.Combine(folder, "heldout.jsonl");
        DataFiles.WriteAtomically(corpus, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
            foreach (var doc in CorpusDocuments()) writer.WriteLine(JsonSerializer.Serialize(new { text = doc }));
        });
        WritePairs(train, TrainPairs());
        WritePairs(heldOut, HeldOutPairs());
        return (corpus, train, heldOut);
    }

    static void WritePairs(string path, IEnumerable<FactQuestion> pairs) => DataFiles.WriteAtomically(path, stream =>
    {
        using var writer = new StreamWriter(stream, new UTF8Encoding(false), leaveOpen: true);
        foreach (var q in pairs)
            writer.WriteLine(JsonSerializer.Serialize(new
            {
                question = q.Question, answer = q.Answer, kind = q.Kind.ToString().ToLowerInvariant(),
                domain = q.Domain, entity = q.Entity, attribute = q.Attribute, cloze = q.Cloze,
            }));
    });

    static readonly string[] Syllables = ["ka", "lo", "mi", "ra", "ten", "vor", "sa", "qui", "bel", "dor", "fen", "gri", "hal", "jun", "mar", "nes", "pol", "rin", "sul", "tav", "zan", "wel", "cor", "bri"];

    // `perEntity` made-up entities per finetuning entity (of its domain), with names that are never a real one's, each
    // shaped like a random real entity and every value taken from another real entity with that attribute (the shape's
    // own value when no entity differs).
    static FactEntity[] Invent(FactTable table, IReadOnlyList<FactEntity> train, int perEntity, Random random)
    {
        var names = table.Entities.Select(e => e.Name).ToHashSet();
        var byDomain = table.Entities.GroupBy(e => e.Domain).ToDictionary(g => g.Key, g => g.ToArray());
        var made = new List<FactEntity>();
        foreach (var entity in Enumerable.Range(0, perEntity).SelectMany(_ => train))
        {
            var domain = byDomain[entity.Domain];
            string name;
            do
            {
                string stem = string.Concat(Enumerable.Range(0, random.Next(2, 4)).Select(_ => Syllables[random.Next(Syllables.Length)]));
                name = char.ToUpperInvariant(stem[0]) + stem[1..] + (entity.Domain == "element" ? "ium" : "ia");
            }
            while (!names.Add(name));
            var shape = domain[random.Next(domain.Length)];
            var facts = shape.Facts.Select(f =>
            {
                var donors = domain.SelectMany(e => e.Facts).Where(d => d.Attribute == f.Attribute && d.Value != f.Value).ToArray();
                return f with { Entity = name, Value = donors.Length == 0 ? f.Value : donors[random.Next(donors.Length)].Value };
            }).ToArray();
            made.Add(new FactEntity(entity.Domain, name, facts));
        }
        return made.ToArray();
    }

    // Every fact of the entity, in shuffled order, each in a randomly chosen template.
    static string Paragraph(FactEntity entity, Random random)
    {
        var facts = entity.Facts.ToArray();
        random.Shuffle(facts);
        return string.Join(" ", facts.Select(f => State(f, random)));
    }

    // Some of the entity's facts as questions and answers (the mixed-training documents).
    static string QuestionBlock(FactEntity entity, Random random)
    {
        var facts = entity.Facts.ToArray();
        random.Shuffle(facts);
        return string.Join("\n", facts.Take(random.Next(1, facts.Length + 1)).Select(f => $"Q: {FactTemplates.For(f.Domain, f.Attribute).Ask(f)}\nA: {f.Value}"));
    }

    // The asked fact with up to two other facts of the same entity, shuffled: the answer must be picked out.
    static string Passage(FactEntity entity, Fact asked, Random random)
    {
        var others = entity.Facts.Where(f => f != asked).ToArray();
        random.Shuffle(others);
        var chosen = others.Take(random.Next(0, Math.Min(2, others.Length) + 1)).Append(asked).ToArray();
        random.Shuffle(chosen);
        return string.Join(" ", chosen.Select(f => State(f, random)));
    }

    static string State(Fact fact, Random random)
    {
        var statements = FactTemplates.For(fact.Domain, fact.Attribute).Statements;
        return AttributeTemplates.Fill(statements[random.Next(statements.Count)], fact);
    }
}
