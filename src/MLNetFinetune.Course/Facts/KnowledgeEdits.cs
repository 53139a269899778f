namespace MLNetFinetune.Course.Facts;

/// <summary>One edited fact: a value the model stored and is taught to replace (<see cref="Old"/> set), or a fact about a made-up entity it never saw.</summary>
/// <param name="Fact">The fact as it should be answered after finetuning.</param>
/// <param name="Old">The value the model stored before, for a changed fact; null for a new one.</param>
public sealed record EditedFact(Fact Fact, string? Old)
{
    /// <summary>True for a changed fact, false for a new one.</summary>
    public bool Changed => Old != null;
}

/// <summary>
/// Question and statement forms of the country attributes the knowledge lesson edits, beyond the one question each that
/// the first lesson trains (<see cref="FactTemplates"/>): forms a paraphrase-augmented finetuning may train on, and forms
/// kept for testing only, so "answers a paraphrase" means a wording the model never saw with that fact.
/// </summary>
public static class KnowledgeForms
{
    /// <summary>Extra question forms per attribute used for training augmentation.</summary>
    public static IReadOnlyList<string> Augmenting(string attribute) => Forms[attribute].Augmenting;

    /// <summary>Question forms per attribute kept for testing.</summary>
    public static IReadOnlyList<string> Testing(string attribute) => Forms[attribute].Testing;

    /// <summary>The attributes with forms.</summary>
    public static IReadOnlyCollection<string> Attributes => Forms.Keys;

    static readonly Dictionary<string, (string[] Augmenting, string[] Testing)> Forms = new()
    {
        ["capital"] = (["Which city is the capital of {entity}?", "Where does the government of {entity} sit?"],
            ["Name the capital of {entity}.", "Tell me the capital city of {entity}."]),
        ["currency"] = (["Which currency is used in {entity}?", "What money do people in {entity} pay with?"],
            ["Name the currency of {entity}.", "Tell me the currency people use in {entity}."]),
        ["continent"] = (["Which continent is {entity} part of?", "Where in the world is {entity}?"],
            ["Name the continent of {entity}.", "Tell me the continent {entity} lies on."]),
        ["language"] = (["Which language do people in {entity} speak?", "What is the main language of {entity}?"],
            ["Name the main language of {entity}.", "Tell me the language spoken in {entity}."]),
    };
}

/// <summary>
/// The knowledge lesson's edits, drawn with a seed: countries whose capital or currency is changed to another country's
/// (the "outdated fact" a user corrects), and made-up countries with a capital, continent, currency and language taken
/// from real ones (facts the model never saw). Values are always real names, so the model has their tokens.
/// </summary>
public static class KnowledgeEdits
{
    static readonly string[] Syllables = ["tor", "ve", "lan", "dri", "ska", "mo", "ren", "ga", "lis", "pha", "ost", "ur", "bel", "cam", "dun", "ix", "ner", "qua"];

    /// <summary>
    /// Changes <paramref name="changed"/> of the <paramref name="stored"/> facts (facts the model answers, one per country)
    /// to another country's value, and invents <paramref name="newEntities"/> countries.
    /// </summary>
    public static IReadOnlyList<EditedFact> Draw(FactTable table, IReadOnlyList<Fact> stored, int changed, int newEntities, int seed)
    {
        var random = new Random(seed);
        var countries = table.Entities.Where(e => e.Domain == "country").ToArray();
        string[] Values(string attribute) => countries.SelectMany(e => e.Facts).Where(f => f.Attribute == attribute).Select(f => f.Value).Distinct().Order(StringComparer.Ordinal).ToArray();
        var pool = stored.ToArray();
        random.Shuffle(pool);
        var edits = pool.DistinctBy(f => f.Entity).Take(changed).Select(old =>
        {
            var others = Values(old.Attribute).Where(v => v != old.Value).ToArray();
            return new EditedFact(old with { Value = others[random.Next(others.Length)] }, old.Value);
        }).ToList();
        if (edits.Count < changed)
            throw new InvalidOperationException($"The model answers facts of only {edits.Count} countries; {changed} changed facts were asked for.");

        var names = table.Entities.Select(e => e.Name).ToHashSet();
        for (int i = 0; i < newEntities; i++)
        {
            string name;
            do
            {
                string stem = string.Concat(Enumerable.Range(0, random.Next(2, 4)).Select(_ => Syllables[random.Next(Syllables.Length)]));
                name = char.ToUpperInvariant(stem[0]) + stem[1..] + "and";
            }
            while (!names.Add(name));
            foreach (string attribute in KnowledgeForms.Attributes)
            {
                var values = Values(attribute);
                edits.Add(new EditedFact(new Fact("country", name, attribute, values[random.Next(values.Length)]), null));
            }
        }
        return edits;
    }
}
