using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tests.Data;

/// <summary>The bundled example data loads through the public API as the lab program uses it.</summary>
public class ExampleDataTests
{
    static string DataFile(string name) => RepoPaths.Of("examples", "data", name);

    [Fact]
    public void PretrainingSampleIsAPileStyleCorpus()
    {
        var ml = new MLContext(seed: 0);
        var corpus = ml.Data.LoadCorpus(new CorpusOptions { Path = DataFile("pretraining_sample.jsonl.zst"), MetadataFields = ["meta.pile_set_name"] });
        var sources = corpus.GetColumn<ReadOnlyMemory<char>>("meta.pile_set_name").Select(s => s.ToString()).ToList();
        Assert.Equal(12, sources.Count);
        Assert.Contains("Github", sources);
        Assert.Contains("Pile-CC", sources);
    }

    [Fact]
    public void InstructionSamplesLoadWithTheirLayoutAndRenderWithTheirTemplate()
    {
        var ml = new MLContext(seed: 0);
        var docs = ml.Data.LoadInstructionData(DataFile("mlnet_finetune_docs.jsonl"));
        Assert.Equal(40, docs.Rows.Count);
        var alpaca = InstructionData.Load(DataFile("alpaca_sample.jsonl"));
        Assert.Equal(InstructionLayout.Alpaca, InstructionData.DetectLayout(alpaca.Columns.Select(c => c.Name)));

        var prompts = ml.Transforms.Text.ApplyPromptTemplate("Prompt", InstructionData.TemplateFor(InstructionLayout.Alpaca).Prompt)
            .Fit(alpaca).Transform(alpaca).GetColumn<ReadOnlyMemory<char>>("Prompt").Select(p => p.ToString()).ToList();
        Assert.Equal(6, prompts.Count);
        Assert.Equal(4, prompts.Count(p => p.Contains("### Input:")));
        Assert.All(prompts, p => Assert.EndsWith("### Response:", p));
    }
}
