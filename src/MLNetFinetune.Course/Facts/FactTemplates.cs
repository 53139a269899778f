namespace MLNetFinetune.Course.Facts;

/// <summary>How one attribute is stated, asked and prompted for. Statements hold <c>{entity}</c> and <c>{value}</c>.</summary>
/// <param name="Statements">Sentences that state the fact; the first, cut before the value, is the cloze prompt.</param>
/// <param name="Question">The question asking for the value, with <c>{entity}</c>.</param>
public sealed record AttributeTemplates(IReadOnlyList<string> Statements, string Question)
{
    /// <summary>The statement with <paramref name="template"/> filled in.</summary>
    public static string Fill(string template, Fact fact) => template.Replace("{entity}", fact.Entity).Replace("{value}", fact.Value);

    /// <summary>The question about <paramref name="fact"/>'s entity.</summary>
    public string Ask(Fact fact) => Question.Replace("{entity}", fact.Entity);

    /// <summary>The prose prompt whose continuation is the value: the first statement cut before <c>{value}</c>.</summary>
    public string Cloze(Fact fact) => Prefix(Statements[0], fact);

    /// <summary><paramref name="statement"/> filled in and cut before <c>{value}</c> (trailing space trimmed).</summary>
    public static string Prefix(string statement, Fact fact) => Fill(statement[..statement.IndexOf("{value}", StringComparison.Ordinal)], fact).TrimEnd();
}

/// <summary>
/// The project's own sentences for the bundled fact domains (country, element). A few templates per attribute, all
/// naming the entity before the value: Allen-Zhu and Li ("Physics of Language Models, Part 3.1") find that varied
/// phrasing makes memorised facts extractable by questions later, and the entity-first order is the direction the
/// questions ask in.
/// </summary>
public static class FactTemplates
{
    static readonly Dictionary<(string Domain, string Attribute), AttributeTemplates> Templates = new()
    {
        [("country", "capital")] = new(["The capital of {entity} is {value}.", "{entity} has its capital in {value}.", "The government of {entity} sits in {value}."],
            "What is the capital of {entity}?"),
        [("country", "continent")] = new(["{entity} is a country in {value}.", "{entity} lies in {value}.", "On a map, {entity} is found in {value}."],
            "On which continent is {entity}?"),
        [("country", "currency")] = new(["The currency of {entity} is the {value}.", "People in {entity} pay with the {value}.", "In {entity}, prices are given in the {value}."],
            "What is the currency of {entity}?"),
        [("country", "language")] = new(["The main language of {entity} is {value}.", "Most people in {entity} speak {value}.", "In {entity}, the first official language is {value}."],
            "What language is spoken in {entity}?"),
        [("element", "symbol")] = new(["The chemical symbol of {entity} is {value}.", "{entity} is written {value} in formulas.", "In the periodic table, {entity} carries the symbol {value}."],
            "What is the chemical symbol of {entity}?"),
        [("element", "atomic number")] = new(["The atomic number of {entity} is {value}.", "An atom of {entity} has {value} protons.", "{entity} is element number {value}."],
            "What is the atomic number of {entity}?"),
        [("element", "category")] = new(["{entity} belongs to the {value} category.", "Chemists file {entity} under {value}.", "By its properties, {entity} falls in the {value} group."],
            "What kind of element is {entity}?"),
        [("element", "state")] = new(["At room temperature, {entity} is a {value}.", "Under normal conditions {entity} is a {value}.", "Left on a table, {entity} stays a {value}."],
            "Is {entity} a solid, a liquid or a gas at room temperature?"),
    };

    /// <summary>Whether the attribute has templates.</summary>
    public static bool Has(string domain, string attribute) => Templates.ContainsKey((domain, attribute));

    /// <summary>The templates of an attribute; unknown ones fail with the list of known ones.</summary>
    public static AttributeTemplates For(string domain, string attribute) =>
        Templates.TryGetValue((domain, attribute), out var t) ? t
            : throw new ArgumentException($"No templates for attribute '{attribute}' of domain '{domain}'; known: {Describe()}.");

    /// <summary>The known domain/attribute pairs, for error messages.</summary>
    public static string Describe() => string.Join(", ", Templates.Keys.Select(k => $"{k.Domain}/{k.Attribute}"));
}
