using System.Globalization;
using CsvHelper;
using CsvHelper.Configuration;
using MLNetFinetune.Data;

namespace MLNetFinetune.Course.Facts;

/// <summary>One fact: <c>(country, Suriname, capital, Paramaribo)</c>.</summary>
public sealed record Fact(string Domain, string Entity, string Attribute, string Value);

/// <summary>
/// A table of facts (<c>domain,entity,attribute,value</c> CSV rows) about entities of one or more domains: the raw
/// material of the knowledge corpus and of the question/answer pairs. Every (domain, attribute) must have templates in
/// <see cref="FactTemplates"/>, so a table the generators cannot phrase fails at load, naming the row.
/// </summary>
public sealed class FactTable
{
    FactTable(IReadOnlyList<Fact> facts)
    {
        Facts = facts;
        Entities = facts.GroupBy(f => (f.Domain, f.Entity)).Select(g => new FactEntity(g.Key.Domain, g.Key.Entity, g.ToArray())).ToArray();
    }

    /// <summary>Every fact, in file order.</summary>
    public IReadOnlyList<Fact> Facts { get; }

    /// <summary>The entities with their facts, in order of first appearance.</summary>
    public IReadOnlyList<FactEntity> Entities { get; }

    /// <summary>Reads a <c>domain,entity,attribute,value</c> CSV (header row first); errors name the file and line.</summary>
    public static FactTable Load(string path)
    {
        var config = new CsvConfiguration(CultureInfo.InvariantCulture) { DetectColumnCountChanges = true };
        using var reader = new StreamReader(DataFiles.OpenRead(path));
        using var csv = new CsvReader(reader, config);
        string[] columns = ["domain", "entity", "attribute", "value"];
        if (!csv.Read() || !csv.ReadHeader())
            throw new DataFileException(path, 0, "the file is empty: a header row domain,entity,attribute,value is expected");
        if (!csv.HeaderRecord!.SequenceEqual(columns))
            throw new DataFileException(path, 1, $"the header is '{string.Join(",", csv.HeaderRecord!)}'; expected 'domain,entity,attribute,value'");
        var facts = new List<Fact>();
        var seen = new HashSet<(string, string, string)>();
        while (true)
        {
            try
            {
                if (!csv.Read()) break;
            }
            catch (CsvHelperException e)
            {
                throw new DataFileException(path, e.Context?.Parser?.RawRow ?? 0, $"malformed CSV: {e.Message.Split('\n')[0]}", inner: e);
            }
            long line = csv.Parser.RawRow;
            var fact = new Fact(csv.GetField(0)!.Trim(), csv.GetField(1)!.Trim(), csv.GetField(2)!.Trim(), csv.GetField(3)!.Trim());
            string[] values = [fact.Domain, fact.Entity, fact.Attribute, fact.Value];
            for (int i = 0; i < columns.Length; i++)
                if (values[i].Length == 0) throw new DataFileException(path, line, $"column '{columns[i]}' is empty", field: columns[i]);
            if (!FactTemplates.Has(fact.Domain, fact.Attribute))
                throw new DataFileException(path, line, $"no templates for attribute '{fact.Attribute}' of domain '{fact.Domain}'; known: {FactTemplates.Describe()}", field: "attribute");
            if (!seen.Add((fact.Domain, fact.Entity, fact.Attribute)))
                throw new DataFileException(path, line, $"a second '{fact.Attribute}' for {fact.Entity}; each entity has one value per attribute", field: "attribute");
            facts.Add(fact);
        }
        if (facts.Count == 0) throw new DataFileException(path, 0, "the file holds no facts");
        return new FactTable(facts);
    }
}

/// <summary>An entity and its facts.</summary>
public sealed record FactEntity(string Domain, string Name, IReadOnlyList<Fact> Facts);
