using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

public class TokenizeTransformTests
{
    readonly MLContext _ml = new(seed: 0);
    static readonly TextTokenizer Gpt2 = TextTokenizer.Gpt2();
    const int Eos = 50256;

    static IDataView Texts(params string[] texts) => new DataFrame(new StringDataFrameColumn("Text", texts));

    static int[][] Column(IDataView view, string name) => view.GetColumn<VBuffer<int>>(name).Select(v => v.DenseValues().ToArray()).ToArray();

    IDataView Run(TokenizeOptions options, params string[] texts)
    {
        var data = Texts(texts);
        return _ml.Transforms.Text.TokenizeForCausalLM(options).Fit(data).Transform(data);
    }

    [Fact]
    public void TokenizesWithBosAndEos()
    {
        var view = Run(new TokenizeOptions { Tokenizer = Gpt2, AddBos = true, AddEos = true }, "Hello world", "Hello");
        Assert.Equal([[Eos, 15496, 995, Eos], [Eos, 15496, Eos]], Column(view, "InputIds"));
        Assert.Equal([[1, 1, 1, 1], [1, 1, 1]], Column(view, "AttentionMask"));
    }

    [Theory]
    [InlineData(TruncationSide.Right, new[] { 15496, 995, Eos })]
    [InlineData(TruncationSide.Left, new[] { 995, 11, Eos })]
    public void TruncatesFromTheChosenSideKeepingEos(TruncationSide side, int[] expected)
    {
        var view = Run(new TokenizeOptions { Tokenizer = Gpt2, AddEos = true, MaxLength = 3, Truncation = side }, "Hello world,");
        Assert.Equal([expected], Column(view, "InputIds"));
    }

    [Fact]
    public void PadsToAFixedLengthOrAMultipleOnEitherSide()
    {
        var fixedRight = Run(new TokenizeOptions { Tokenizer = Gpt2, Padding = PaddingMode.Fixed, PadTo = 4 }, "Hello world", "Hello world, Hello world");
        Assert.Equal([[15496, 995, Eos, Eos], [15496, 995, 11, 18435]], Column(fixedRight, "InputIds"));
        Assert.Equal([[1, 1, 0, 0], [1, 1, 1, 1]], Column(fixedRight, "AttentionMask"));

        var multipleLeft = Run(new TokenizeOptions { Tokenizer = Gpt2, Padding = PaddingMode.MultipleOf, PadTo = 8, PaddingSide = PaddingSide.Left }, "Hello world");
        Assert.Equal([[Eos, Eos, Eos, Eos, Eos, Eos, 15496, 995]], Column(multipleLeft, "InputIds"));
        Assert.Equal([[0, 0, 0, 0, 0, 0, 1, 1]], Column(multipleLeft, "AttentionMask"));
    }

    [Fact]
    public void AMissingOrNonTextColumnIsNamed()
    {
        var estimator = _ml.Transforms.Text.TokenizeForCausalLM(Gpt2, inputColumnName: "Body");
        var data = Texts("x");
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(SchemaShapes.FromSchema(data.Schema)));
        Assert.Contains("reads column 'Body', which the input does not have. Input columns: 'Text'", e.Message);
        Assert.Contains("reads column 'Body', which the input does not have", Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(data)).Message);

        // A column that exists but holds numbers is named with its type, at schema time and at Fit.
        IDataView numbers = new DataFrame(new SingleDataFrameColumn("Body", [1f, 2f]));
        var shape = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.GetOutputSchema(SchemaShapes.FromSchema(numbers.Schema)));
        Assert.Contains("reads column 'Body', which is Single (Scalar); it must be a text column", shape.Message);
        var fit = Assert.Throws<ArgumentOutOfRangeException>(() => estimator.Fit(numbers));
        Assert.Contains("reads column 'Body', which is Single; it must be a text column", fit.Message);

        Assert.Contains("PadTo 0 leaves no room for text beside BOS/EOS", Assert.Throws<ArgumentOutOfRangeException>(() => new TokenizeEstimator(new TokenizeOptions { Tokenizer = Gpt2, Padding = PaddingMode.Fixed })).Message);
    }

    [Fact]
    public void OneTokenizationServesBothColumnsPerRow()
    {
        var data = Texts("Hello world", "Hello");
        var view = _ml.Transforms.Text.TokenizeForCausalLM(Gpt2).Fit(data).Transform(data);
        using var cursor = view.GetRowCursor(view.Schema);
        var ids = cursor.GetGetter<VBuffer<int>>(view.Schema["InputIds"]);
        var mask = cursor.GetGetter<VBuffer<int>>(view.Schema["AttentionMask"]);
        VBuffer<int> a = default, m = default;
        var lengths = new List<(int, int)>();
        while (cursor.MoveNext())
        {
            mask(ref m);
            ids(ref a);
            lengths.Add((a.Length, m.Length));
        }
        Assert.Equal([(2, 2), (1, 1)], lengths);
    }
}

public class TokenizePairsTests
{
    readonly MLContext _ml = new(seed: 0);
    static readonly TextTokenizer Gpt2 = TextTokenizer.Gpt2();
    const int Eos = 50256;

    static IDataView Pairs(string prompt, string response) => new DataFrame(
        new StringDataFrameColumn("Prompt", [prompt]), new StringDataFrameColumn("Response", [response]));

    (int[] Ids, int[] Labels) Run(TokenizePairsOptions options, string prompt, string response)
    {
        var data = Pairs(prompt, response);
        var view = _ml.Transforms.Text.TokenizePromptResponse(options).Fit(data).Transform(data);
        return (view.GetColumn<VBuffer<int>>("InputIds").Single().DenseValues().ToArray(),
                view.GetColumn<VBuffer<int>>("Labels").Single().DenseValues().ToArray());
    }

    [Fact]
    public void MaskPutsTheIgnoreIndexExactlyOnPromptPositions()
    {
        string prompt = "### Question:\nWhat is the capital of Chile?\n\n### Answer:";
        var (ids, labels) = Run(new TokenizePairsOptions { Tokenizer = Gpt2 }, prompt, " Santiago");
        int promptLength = Gpt2.Encode(prompt).Count;
        var responseIds = Gpt2.Encode(" Santiago");
        Assert.Equal([.. Gpt2.Encode(prompt), .. responseIds, Eos], ids);
        Assert.Equal(ids.Length, labels.Length);
        Assert.All(labels[..promptLength], l => Assert.Equal(TokenSequences.IgnoreIndex, l));
        Assert.Equal([.. responseIds, Eos], labels[promptLength..]);
    }

    [Fact]
    public void WholeTextLossLabelsEveryToken()
    {
        var (ids, labels) = Run(new TokenizePairsOptions { Tokenizer = Gpt2, MaskPrompt = false }, "Hello", " world");
        Assert.Equal([15496, 995, Eos], ids);
        Assert.Equal(ids, labels);
    }

    [Fact]
    public void LongPairsLoseTheStartOfThePromptFirst()
    {
        var (ids, labels) = Run(new TokenizePairsOptions { Tokenizer = Gpt2, MaxLength = 4 }, "Hello world, Hello", " world");
        Assert.Equal([11, 18435, 995, Eos], ids); // ", Hello" kept, "Hello world" cut
        Assert.Equal([-100, -100, 995, Eos], labels);

        // A long response keeps the end of its prompt (up to half the budget) and is itself cut.
        var (longResponse, longLabels) = Run(new TokenizePairsOptions { Tokenizer = Gpt2, MaxLength = 2 }, "Hello", " world, Hello world");
        Assert.Equal([15496, 995], longResponse);
        Assert.Equal([-100, 995], longLabels);
    }

    [Fact]
    public void AnEmptyResponseIsAnErrorNamingTheRow()
    {
        var data = new DataFrame(new StringDataFrameColumn("Prompt", ["a", "b"]), new StringDataFrameColumn("Response", ["x", "  "]));
        var view = _ml.Transforms.Text.TokenizePromptResponse(new TokenizePairsOptions { Tokenizer = Gpt2 }).Fit(data).Transform(data);
        var e = Assert.Throws<InvalidDataException>(() => view.GetColumn<VBuffer<int>>("InputIds").ToList());
        Assert.Equal("Row 1: the response ('Response') is empty; every example needs an answer to learn.", e.Message);
    }
}

public class TokenBatchTests
{
    [Fact]
    public void PadsToTheLongestRowWithMaskAndIgnoredLabels()
    {
        var batch = TokenBatch.Pad([[1, 2, 3], [4]], padId: 0, labels: [[-100, 2, 3], [4]]);
        Assert.Equal((2, 3), (batch.Rows, batch.Length));
        Assert.Equal([1, 2, 3, 4, 0, 0], batch.Ids);
        Assert.Equal([1, 1, 1, 1, 0, 0], batch.AttentionMask);
        Assert.Equal([-100, 2, 3, 4, -100, -100], batch.Labels!);
    }

    [Fact]
    public void LeftPaddingAndMultiplesForGeneration()
    {
        var batch = TokenBatch.Pad([[1, 2, 3], [4]], padId: 9, side: PaddingSide.Left, multipleOf: 4);
        Assert.Equal(4, batch.Length);
        Assert.Equal([9, 1, 2, 3], batch.Row(0).ToArray());
        Assert.Equal([9, 9, 9, 4], batch.Row(1).ToArray());
        Assert.Equal([0, 1, 1, 1, 0, 0, 0, 1], batch.AttentionMask);
    }

    [Fact]
    public void MismatchedLabelsAreRejected()
    {
        Assert.Contains("Row 0 has 2 ids but 1 labels", Assert.Throws<ArgumentException>(() => TokenBatch.Pad([[1, 2]], 0, labels: [[1]])).Message);
    }
}
