using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Course.Facts;

namespace MLNetFinetune.Tests.Data;

/// <summary>The bundled fact table, the corpus and pair generators, and the files generated from them.</summary>
public class FactDatasetsTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static string Bundled(string name) => RepoPaths.Of("examples", "data", "facts", name);

    [Fact]
    public void BundledTableHoldsBothDomains()
    {
        var table = FactTable.Load(Bundled("facts.csv"));
        Assert.Equal(1433, table.Facts.Count);
        Assert.Equal(245, table.Entities.Count(e => e.Domain == "country"));
        Assert.Equal(118, table.Entities.Count(e => e.Domain == "element"));
        Assert.Contains(new Fact("country", "Suriname", "capital", "Paramaribo"), table.Facts);
        Assert.Contains(new Fact("element", "Copper", "symbol", "Cu"), table.Facts);
    }

    [Theory]
    [InlineData("domain,entity,attribute,value\ncountry,Peru,capital,Lima\ncountry,Chile,,Santiago\n", ":3: column 'attribute' is empty")]
    [InlineData("domain,entity,attribute,value\ncountry,Peru,anthem,Somos libres\n", ":2: no templates for attribute 'anthem' of domain 'country'")]
    [InlineData("domain,entity,attribute,value\ncountry,Peru,capital,Lima\ncountry,Peru,capital,Cusco\n", ":3: a second 'capital' for Peru")]
    [InlineData("entity,value\nPeru,Lima\n", ":1: the header is 'entity,value'")]
    [InlineData("", "the file is empty")]
    public void BadTablesAreNamedByFileAndLine(string content, string expected)
    {
        string path = _dir.File("facts.csv", content);
        var e = Assert.Throws<DataFileException>(() => FactTable.Load(path));
        Assert.Contains(expected, e.Message);
        Assert.StartsWith(path, e.Message);
    }

    [Fact]
    public void SplitKeepsHeldOutEntitiesOutOfFinetuningAndOutOfCorpusQuestions()
    {
        var datasets = new FactDatasets(FactTable.Load(Bundled("facts.csv")), new FactDatasetOptions { CorpusRounds = 2 });
        var train = datasets.Split.Train.Select(e => e.Name).ToHashSet();
        var held = datasets.Split.HeldOut.Select(e => e.Name).ToHashSet();
        Assert.Empty(train.Intersect(held));
        Assert.Equal(74, datasets.Split.HeldOut.Count(e => e.Domain == "country")); // 30% of each domain
        Assert.Equal(35, datasets.Split.HeldOut.Count(e => e.Domain == "element"));

        var corpus = datasets.CorpusDocuments().ToList();
        var corpusText = string.Join("\n", corpus);
        var asked = corpusText.Split('\n').Where(l => l.StartsWith("Q: ", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(asked);
        foreach (var entity in datasets.Split.HeldOut)
        {
            Assert.DoesNotContain(asked, q => q.EndsWith($" {entity.Name}?", StringComparison.Ordinal));
            // Every held-out fact is stated in prose (recall must be possible).
            foreach (var fact in entity.Facts)
                Assert.Contains(FactTemplates.For(fact.Domain, fact.Attribute).Statements, t => corpusText.Contains(AttributeTemplates.Fill(t, fact)));
        }

        // Finetuning: recall about the finetuning entities; extraction about made-up entities the model cannot know.
        var trainPairs = datasets.TrainPairs().ToList();
        Assert.All(trainPairs.Where(q => q.Kind == FactQuestionKind.Recall), q => Assert.Contains(q.Entity, train));
        var madeUp = trainPairs.Where(q => q.Kind == FactQuestionKind.Extraction).Select(q => q.Entity).ToHashSet();
        Assert.Equal(4 * datasets.Split.Train.Count, madeUp.Count);
        Assert.All(madeUp, name => Assert.DoesNotContain(name, corpusText));
        Assert.All(datasets.HeldOutPairs(), q => Assert.Contains(q.Entity, held));

        foreach (var q in datasets.Questions(datasets.Split.HeldOut, FactQuestionKind.Extraction))
        {
            Assert.StartsWith("Passage: ", q.Question);
            Assert.Contains(q.Answer, q.Question); // the passage states the answer
        }
        foreach (var q in datasets.Questions(datasets.Split.HeldOut, FactQuestionKind.Recall))
        {
            if (q.Attribute != "state") // the state question names its three choices
                Assert.DoesNotContain(q.Answer, q.Question.Replace(q.Entity, ""));
            // The cloze prompt is the first statement template, cut before the answer.
            Assert.StartsWith($"{q.Cloze} {q.Answer}", AttributeTemplates.Fill(FactTemplates.For(q.Domain, q.Attribute).Statements[0], new Fact(q.Domain, q.Entity, q.Attribute, q.Answer)));
        }
    }

    [Fact]
    public void GenerationIsDeterministicAndTheBundledFilesAreItsOutput()
    {
        // The committed corpus and pairs are exactly what `mlnet-finetune facts` writes with its defaults.
        var (corpus, train, heldOut) = new FactDatasets(FactTable.Load(Bundled("facts.csv"))).WriteTo(_dir.Path);
        Assert.Equal(File.ReadAllText(Bundled("train.jsonl")), File.ReadAllText(train));
        Assert.Equal(File.ReadAllText(Bundled("heldout.jsonl")), File.ReadAllText(heldOut));
        var ml = new MLContext(seed: 0);
        string Texts(string path) => string.Join("\n", ml.Data.LoadCorpus(new CorpusOptions { Path = path }).GetColumn<ReadOnlyMemory<char>>("Text").Select(t => t.ToString()));
        Assert.Equal(Texts(Bundled("corpus.jsonl.zst")), Texts(corpus));
    }

    [Fact]
    public void PairsLoadIntoADataFrameWithTheirExtraFields()
    {
        var ml = new MLContext(seed: 0);
        var frame = ml.Data.LoadInstructionData(Bundled("heldout.jsonl"), new InstructionDataOptions { ExtraFields = ["kind", "entity", "cloze"] });
        Assert.Equal(["question", "answer", "kind", "entity", "cloze"], frame.Columns.Select(c => c.Name));
        Assert.Equal(frame.Rows.Count / 2, frame.Rows.Count(r => (string)r["kind"] == "recall"));

        string path = _dir.File("pairs.jsonl", JsonSerializer.Serialize(new { question = "q", answer = "a" }) + "\n");
        var e = Assert.Throws<DataFileException>(() => ml.Data.LoadInstructionData(path, new InstructionDataOptions { ExtraFields = ["kind"] }));
        Assert.Contains(":1: missing field 'kind'", e.Message);
    }
}
