using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.DataViews;

namespace MLNetFinetune.Tests.DataViews;

public class RowBlocksTests
{
    readonly MLContext _ml = new(seed: 0);

    sealed class TextRow
    {
        public string Text { get; set; } = "";
    }

    // Reads every row of the view through a RowBlocks that upper-cases blocks of texts, recording the block sizes.
    static (List<string> Values, List<int> Blocks, List<string> Seen) ReadAll(IDataView view, int blockSize)
    {
        var blocks = new List<int>();
        var values = new List<string>();
        var seen = new List<string>();
        using var cursor = view.GetRowCursor(view.Schema);
        var text = cursor.GetGetter<ReadOnlyMemory<char>>(view.Schema["Text"]);
        ReadOnlyMemory<char> current = default;
        using var column = new RowBlocks<string, string>(cursor, view, ["Text"], blockSize, row =>
        {
            var getter = row.GetGetter<ReadOnlyMemory<char>>(row.Schema["Text"]);
            ReadOnlyMemory<char> value = default;
            return () => { getter(ref value); return value.ToString(); };
        }, texts => { blocks.Add(texts.Count); return texts.Select(t => t.ToUpperInvariant()).ToList(); });
        while (cursor.MoveNext())
        {
            values.Add(column.Value);
            text(ref current);
            seen.Add(current.ToString());
        }
        return (values, blocks, seen);
    }

    [Fact]
    public void ComputesBlocksAheadAndServesEachRowItsOwnValue()
    {
        var texts = Enumerable.Range(0, 10).Select(i => $"row {i}").ToList();
        var (values, blocks, _) = ReadAll(_ml.Data.LoadFromEnumerable(texts.Select(t => new TextRow { Text = t })), blockSize: 4);
        Assert.Equal(texts.Select(t => t.ToUpperInvariant()), values);
        Assert.Equal([4, 4, 2], blocks);
    }

    [Fact]
    public void FallsBackToOneRowAtATimeWhenASecondReadGivesOtherRows()
    {
        // An enumerable that yields different rows each time it is enumerated: the read-ahead cannot be trusted.
        int pass = 0;
        IEnumerable<TextRow> Rows()
        {
            pass++;
            for (int i = 0; i < 6; i++) yield return new TextRow { Text = $"pass {pass} row {i}" };
        }
        var (values, blocks, seen) = ReadAll(_ml.Data.LoadFromEnumerable(Rows()), blockSize: 4);
        Assert.Equal(seen.Select(t => t.ToUpperInvariant()), values); // each row gets the value of its own text
        Assert.Equal(Enumerable.Repeat(1, 6), blocks);
    }
}
