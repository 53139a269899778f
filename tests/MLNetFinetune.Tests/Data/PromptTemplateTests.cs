using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Tests.Data;

public class PromptTemplateTests
{
    readonly MLContext _ml = new(seed: 0);

    static DataFrame Pairs() => new(
        new StringDataFrameColumn("question", ["What is the capital of Chile?", "Which file holds the merges?"]),
        new StringDataFrameColumn("answer", ["Santiago", "merges.txt"]));

    [Fact]
    public void QuestionAnswerTemplatesRenderTheCourseFormat()
    {
        var training = PromptTemplates.QuestionAnswer.Training.Format(("question", "Q?"), ("answer", "A."));
        var prompt = PromptTemplates.QuestionAnswer.Prompt.Format(("question", "Q?"));
        Assert.Equal("### Question:\nQ?\n\n### Answer:\nA.", training);
        Assert.Equal("### Question:\nQ?\n\n### Answer:", prompt);
        Assert.StartsWith(prompt, training);
    }

    [Fact]
    public void AlpacaDropsTheInputSectionWhenInputIsEmpty()
    {
        var withInput = PromptTemplates.Alpaca.Training.Format(("instruction", "Add."), ("input", "2 3"), ("output", "5"));
        var withoutInput = PromptTemplates.Alpaca.Training.Format(("instruction", "Add."), ("input", " "), ("output", "5"));
        Assert.Contains("### Input:\n2 3\n\n### Response:\n5", withInput);
        Assert.DoesNotContain("### Input:", withoutInput);
        Assert.EndsWith("### Instruction:\nAdd.\n\n### Response:\n5", withoutInput);
        Assert.Equal(["instruction", "input", "output"], PromptTemplates.Alpaca.Training.Columns);
    }

    [Fact]
    public void BracesEscapeAndBadTemplatesFailWithThePosition()
    {
        Assert.Equal("{json} x", new PromptTemplate("{{json}} {v}").Format(("v", "x")));
        Assert.Contains("Unclosed '{' at position 4", Assert.Throws<FormatException>(() => new PromptTemplate("abc {x")).Message);
        Assert.Contains("Unmatched '}' at position 1", Assert.Throws<FormatException>(() => new PromptTemplate("a}")).Message);
        Assert.Contains("Empty placeholder", Assert.Throws<FormatException>(() => new PromptTemplate("{ }")).Message);
        Assert.Contains("needs a value for 'answer'", Assert.Throws<ArgumentException>(() => PromptTemplates.QuestionAnswer.Training.Format(("question", "q"))).Message);
    }

    [Fact]
    public void TransformAddsBothFormsAsColumnsOfADataFramePipeline()
    {
        var pipeline = _ml.Transforms.Text.ApplyPromptTemplate("Text", PromptTemplates.QuestionAnswer.Training)
            .Append(_ml.Transforms.Text.ApplyPromptTemplate("Prompt", PromptTemplates.QuestionAnswer.Prompt));
        var data = Pairs();
        var outShape = pipeline.GetOutputSchema(SchemaShapes.FromSchema(((IDataView)data).Schema));
        Assert.Contains(outShape, c => c.Name == "Prompt");

        var scored = pipeline.Fit(data).Transform(data);
        var text = scored.GetColumn<ReadOnlyMemory<char>>("Text").Select(m => m.ToString()).ToArray();
        var prompts = scored.GetColumn<ReadOnlyMemory<char>>("Prompt").Select(m => m.ToString()).ToArray();
        Assert.Equal("### Question:\nWhat is the capital of Chile?\n\n### Answer:\nSantiago", text[0]);
        Assert.Equal("### Question:\nWhich file holds the merges?\n\n### Answer:", prompts[1]);
    }

    [Fact]
    public void WorksInAPredictionEngine()
    {
        var model = _ml.Transforms.Text.ApplyPromptTemplate("Prompt", "Q: {question}\nA:").Fit(Pairs());
        var engine = _ml.Model.CreatePredictionEngine<QuestionRow, PromptRow>(model);
        Assert.Equal("Q: Why?\nA:", engine.Predict(new QuestionRow { question = "Why?", answer = "" }).Prompt);
        Assert.Equal("Q: How?\nA:", engine.Predict(new QuestionRow { question = "How?", answer = "" }).Prompt); // no stale row
    }

    [Fact]
    public void AMissingColumnFailsAtGetOutputSchemaNamingTheColumnsThatExist()
    {
        var estimator = _ml.Transforms.Text.ApplyPromptTemplate("Prompt", PromptTemplates.Alpaca.Prompt);
        var data = Pairs();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(SchemaShapes.FromSchema(((IDataView)data).Schema)));
        Assert.Contains("reads column 'instruction', which the input does not have. Input columns: 'question', 'answer'.", e.Message);
        Assert.Contains("reads column 'instruction'", Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(data)).Message);
    }

    [Fact]
    public void ANonTextColumnIsRejected()
    {
        var data = new DataFrame(new StringDataFrameColumn("question", ["q"]), new SingleDataFrameColumn("answer", [1f]));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => _ml.Transforms.Text.ApplyPromptTemplate("T", PromptTemplates.QuestionAnswer.Training).Fit(data));
        Assert.Contains("'answer', which is Single", e.Message);
    }

    [Fact]
    public void SavingIntoAnMLNetZipExplainsWhyItCannot()
    {
        var model = _ml.Transforms.Text.ApplyPromptTemplate("Prompt", "{question}").Fit(Pairs());
        var e = Assert.Throws<NotSupportedException>(() => _ml.Model.Save(model, ((IDataView)Pairs()).Schema, new MemoryStream()));
        Assert.Contains("cannot be written into an ML.NET model zip", e.Message);
    }

    public sealed class QuestionRow
    {
        public string question { get; set; } = "";
        public string answer { get; set; } = "";
    }

    public sealed class PromptRow
    {
        public string Prompt { get; set; } = "";
    }
}
