using System.Text;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tests.Data;

public class JsonlWriterTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly MLContext _ml = new(seed: 0);

    public void Dispose() => _dir.Dispose();

    [Theory]
    [InlineData("processed.jsonl")]
    [InlineData("processed.jsonl.zst")]
    public void ADataFrameRoundTripsThroughJsonl(string name)
    {
        var df = new DataFrame(
            new StringDataFrameColumn("question", ["Où est Genève ?", "Quote \"this\"\nplease"]),
            new StringDataFrameColumn("answer", ["En Suisse 🇨🇭", "ok"]));
        string path = Path.Combine(_dir.Path, "out", name);
        _ml.Data.SaveAsJsonl(df, path);

        var back = InstructionData.Load(path);
        Assert.Equal(df["question"].Cast<string>(), back["question"].Cast<string>());
        Assert.Equal(df["answer"].Cast<string>(), back["answer"].Cast<string>());
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(path)!, "*.tmp-*"));
    }

    [Fact]
    public void WritesNumbersBooleansVectorsAndNaNAsJsonValues()
    {
        var rows = new[] { new Row { Name = "a", Score = 1.5f, Ok = true, Ids = [1, 2, 3] }, new Row { Name = "b", Score = float.NaN, Ok = false, Ids = [] } };
        var view = _ml.Data.LoadFromEnumerable(rows);
        var stream = new MemoryStream();
        Assert.Equal(2, JsonlWriter.Write(view, stream));
        string[] lines = Encoding.UTF8.GetString(stream.ToArray()).Split('\n');
        Assert.Equal("{\"Name\":\"a\",\"Score\":1.5,\"Ok\":true,\"Ids\":[1,2,3]}", lines[0]);
        Assert.Equal("{\"Name\":\"b\",\"Score\":null,\"Ok\":false,\"Ids\":[]}", lines[1]);
        Assert.Equal("", lines[2]);
    }

    [Fact]
    public void ChosenColumnsAreWrittenInOrderAndAnUnknownOneIsNamed()
    {
        var df = new DataFrame(new StringDataFrameColumn("a", ["1"]), new StringDataFrameColumn("b", ["2"]));
        var stream = new MemoryStream();
        JsonlWriter.Write(df, stream, new JsonlWriteOptions { Columns = ["b", "a"] });
        Assert.Equal("{\"b\":\"2\",\"a\":\"1\"}\n", Encoding.UTF8.GetString(stream.ToArray()));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => JsonlWriter.Write(df, new MemoryStream(), new JsonlWriteOptions { Columns = ["c"] }));
        Assert.Contains("Column 'c' does not exist. Columns: 'a', 'b'.", e.Message);
    }

    [Fact]
    public void AFailedWriteLeavesNoFileBehind()
    {
        string path = Path.Combine(_dir.Path, "partial.jsonl");
        var view = _ml.Data.LoadFromEnumerable(new[] { new Row { Name = "x", Ids = [1] } });
        var failing = new ThrowingView(view);
        Assert.Equal("disk gone", Assert.Throws<IOException>(() => JsonlWriter.Write(failing, path)).Message);
        Assert.Empty(Directory.GetFiles(_dir.Path));
    }

    public sealed class Row
    {
        public string Name { get; set; } = "";
        public float Score { get; set; }
        public bool Ok { get; set; }
        [VectorType] public int[] Ids { get; set; } = [];
    }

    /// <summary>A view whose cursor fails on the first row, as a disk or decoder error would.</summary>
    sealed class ThrowingView(IDataView inner) : IDataView
    {
        public bool CanShuffle => false;
        public DataViewSchema Schema => inner.Schema;
        public long? GetRowCount() => null;
        public DataViewRowCursor GetRowCursor(IEnumerable<DataViewSchema.Column> columnsNeeded, Random? rand = null) => throw new IOException("disk gone");
        public DataViewRowCursor[] GetRowCursorSet(IEnumerable<DataViewSchema.Column> columnsNeeded, int n, Random? rand = null) => throw new IOException("disk gone");
    }
}
