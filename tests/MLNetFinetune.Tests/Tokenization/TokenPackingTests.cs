using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

public class TokenPackingTests
{
    readonly MLContext _ml = new(seed: 0);

    IDataView Documents(params int[][] documents) =>
        _ml.Data.LoadFromEnumerable(documents.Select(d => new Doc { InputIds = d }));

    static int[][] Blocks(IDataView view, string column = "InputIds") =>
        view.GetColumn<VBuffer<int>>(column).Select(v => v.DenseValues().ToArray()).ToArray();

    sealed class Doc
    {
        [VectorType] public int[] InputIds { get; set; } = [];
    }

    [Fact]
    public void PacksTheRealCorpusLosingNoTokenAndCrossingDocumentsOnlyAtEos()
    {
        var tokenizer = TextTokenizer.Gpt2();
        int eos = tokenizer.EosId!.Value;
        var corpus = _ml.Data.LoadCorpus(RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst"));
        var tokenized = _ml.Transforms.Text.TokenizeForCausalLM(tokenizer).Fit(corpus).Transform(corpus);
        var packed = _ml.Data.PackTokens(tokenized, new PackingOptions { BlockSize = 32, SeparatorId = eos, Remainder = RemainderPolicy.Keep });

        var documents = tokenized.GetColumn<VBuffer<int>>("InputIds").Select(v => v.DenseValues().ToArray()).ToArray();
        int[] expectedStream = documents.SelectMany(d => d.Append(eos)).ToArray();
        int[][] blocks = Blocks(packed);
        Assert.All(blocks[..^1], b => Assert.Equal(32, b.Length));
        Assert.Equal(expectedStream, blocks.SelectMany(b => b).ToArray()); // nothing lost, order kept

        // Every document boundary in the packed stream sits right after an EOS.
        int position = 0;
        foreach (var document in documents)
        {
            position += document.Length;
            Assert.Equal(eos, expectedStream[position]);
            position++;
        }
        Assert.Equal(Blocks(packed), blocks); // a second pass gives the same blocks
    }

    [Theory]
    [InlineData(RemainderPolicy.Drop, 2)]
    [InlineData(RemainderPolicy.Keep, 3)]
    [InlineData(RemainderPolicy.Pad, 3)]
    public void TheRemainderPolicyDecidesTheLastBlock(RemainderPolicy policy, int blockCount)
    {
        var packed = _ml.Data.PackTokens(Documents([1, 2, 3], [4, 5, 6, 7], [8, 9]), new PackingOptions { BlockSize = 4, Remainder = policy, PadId = 0 });
        int[][] blocks = Blocks(packed);
        Assert.Equal(blockCount, blocks.Length);
        Assert.Equal([1, 2, 3, 4], blocks[0]);
        Assert.Equal([5, 6, 7, 8], blocks[1]);
        if (policy == RemainderPolicy.Keep) Assert.Equal([9], blocks[2]);
        if (policy == RemainderPolicy.Pad)
        {
            Assert.Equal([9, 0, 0, 0], blocks[2]);
            Assert.Equal([1, 0, 0, 0], Blocks(packed, "AttentionMask")[2]);
        }
    }

    [Fact]
    public void TheInputColumnMustHoldTokenIds()
    {
        var text = _ml.Data.LoadFromEnumerable(new[] { new { Text = "x" } });
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => _ml.Data.PackTokens(text, new PackingOptions { BlockSize = 4 }));
        Assert.Contains("reads column 'InputIds', which the input does not have. Input columns: 'Text'", e.Message);
    }
}
