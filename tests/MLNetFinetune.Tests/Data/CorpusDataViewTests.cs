using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tests.Data;

public class CorpusDataViewTests : IDisposable
{
    readonly TempDirectory _dir = new();
    readonly MLContext _ml = new(seed: 0);

    public void Dispose() => _dir.Dispose();

    static List<string[]> ReadAll(IDataView view)
    {
        var rows = new List<string[]>();
        using var cursor = view.GetRowCursor(view.Schema);
        var getters = view.Schema.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToArray();
        while (cursor.MoveNext())
        {
            rows.Add(getters.Select(g => { ReadOnlyMemory<char> v = default; g(ref v); return v.ToString(); }).ToArray());
        }
        return rows;
    }

    const string PileLines =
        "{\"text\": \"Rivers carry sediment to the sea.\", \"meta\": {\"pile_set_name\": \"Pile-CC\"}}\n" +
        "{\"text\": \"def add(a, b):\\n    return a + b\", \"meta\": {\"pile_set_name\": \"Github\"}}\n" +
        "\n" +
        "{\"text\": \"Zürich liegt am Zürichsee. 東京 🚆\", \"meta\": {\"pile_set_name\": \"Wikipedia (en)\"}}\n";

    [Theory]
    [InlineData("pile/00.jsonl")]
    [InlineData("pile/00.jsonl.gz")]
    [InlineData("pile/00.jsonl.zst")]
    public void StreamsPileStyleJsonLinesWithNestedMetadata(string name)
    {
        string path = _dir.File(name, PileLines);
        var view = _ml.Data.LoadCorpus(new CorpusOptions { Path = path, MetadataFields = ["source=meta.pile_set_name"] });

        Assert.Equal(["Text", "source"], view.Schema.Select(c => c.Name));
        var rows = ReadAll(view);
        Assert.Equal(3, rows.Count);
        Assert.Equal(["Rivers carry sediment to the sea.", "Pile-CC"], rows[0]);
        Assert.Equal("def add(a, b):\n    return a + b", rows[1][0]);
        Assert.Equal(["Zürich liegt am Zürichsee. 東京 🚆", "Wikipedia (en)"], rows[2]);
        Assert.Equal(3, view.LastPass!.Records);
    }

    [Fact]
    public void StreamsC4StyleGzipWithTopLevelMetadataAndMissingFieldsAsEmpty()
    {
        string path = _dir.File("c4/c4-train.00000-of-01024.json.gz",
            "{\"text\":\"A bakery opened downtown.\",\"timestamp\":\"2019-04-25T12:57:54Z\",\"url\":\"https://example.com/a\"}\n" +
            "{\"text\":\"Second page.\",\"timestamp\":\"2019-04-26T00:00:00Z\"}\n");
        var view = _ml.Data.LoadCorpus(new CorpusOptions { Path = path, MetadataFields = ["url", "timestamp"] });
        var rows = ReadAll(view);
        Assert.Equal(["A bakery opened downtown.", "https://example.com/a", "2019-04-25T12:57:54Z"], rows[0]);
        Assert.Equal(["Second page.", "", "2019-04-26T00:00:00Z"], rows[1]);
    }

    [Theory]
    [InlineData(TextDocumentMode.File, new[] { "Line one.\nLine two.\n\nNew paragraph." })]
    [InlineData(TextDocumentMode.Line, new[] { "Line one.", "Line two.", "New paragraph." })]
    [InlineData(TextDocumentMode.Paragraph, new[] { "Line one.\nLine two.", "New paragraph." })]
    public void CutsTextFilesIntoDocumentsByMode(TextDocumentMode mode, string[] expected)
    {
        string path = _dir.File("notes.txt", "\uFEFFLine one.\r\nLine two.\r\n\r\nNew paragraph.\r\n\r\n");
        var view = new CorpusDataView(new CorpusOptions { Path = path, TextMode = mode });
        Assert.Equal(expected, ReadAll(view).Select(r => r[0]));
    }

    [Fact]
    public void FoldersAndGlobsResolveInOrdinalOrderAndEveryCursorIsANewPass()
    {
        _dir.File("corpus/b.jsonl", "{\"text\":\"b1\"}\n");
        _dir.File("corpus/a.jsonl.zst", "{\"text\":\"a1\"}\n{\"text\":\"a2\"}\n");
        _dir.File("corpus/sub/c.txt", "c1");
        _dir.File("corpus/ignored.md", "not a corpus file");

        var folder = new CorpusDataView(new CorpusOptions { Path = Path.Combine(_dir.Path, "corpus") });
        Assert.Equal(["a1", "a2", "b1", "c1"], ReadAll(folder).Select(r => r[0]));
        Assert.Equal(["a1", "a2", "b1", "c1"], ReadAll(folder).Select(r => r[0])); // second epoch

        var glob = new CorpusDataView(new CorpusOptions { Path = Path.Combine(_dir.Path, "corpus", "*.jsonl*") });
        Assert.Equal(["a1", "a2", "b1"], ReadAll(glob).Select(r => r[0]));
        var deep = new CorpusDataView(new CorpusOptions { Path = Path.Combine(_dir.Path, "corpus", "**", "*.txt") });
        Assert.Equal(["c1"], ReadAll(deep).Select(r => r[0]));
    }

    [Fact]
    public void MalformedJsonFailsWithFileLineAndSnippet()
    {
        string path = _dir.File("bad.jsonl", "{\"text\":\"ok\"}\n{\"text\": \"unterminated}\n{\"text\":\"never read\"}\n");
        var view = new CorpusDataView(new CorpusOptions { Path = path });
        var e = Assert.Throws<DataFileException>(() => ReadAll(view));
        Assert.Equal(path, e.FilePath);
        Assert.Equal(2, e.Line);
        Assert.StartsWith($"{path}:2: malformed JSON", e.Message);
        Assert.Contains("{\"text\": \"unterminated}", e.Message);
    }

    [Fact]
    public void SkipAndCountReportsTheSkippedRecordsThroughReportProgressAndLog()
    {
        string path = _dir.File("mixed.jsonl",
            "{\"text\":\"one\"}\nnot json\n{\"body\":\"no text field\"}\n{\"text\":\"\"}\n{\"text\":42}\n{\"text\":\"two\"}\n");
        var log = new List<string>();
        _ml.Log += (_, e) => { if (e.Source == "Corpus") log.Add(e.Message); };
        DataLoadReport? reported = null;
        var view = _ml.Data.LoadCorpus(new CorpusOptions
        {
            Path = path,
            OnBadRecord = BadRecordPolicy.SkipAndCount,
            Progress = new SynchronousProgress<DataLoadReport>(r => reported = r),
        });

        Assert.Equal(["one", "two"], ReadAll(view).Select(r => r[0]));
        Assert.Equal(4, view.LastPass!.Skipped);
        Assert.Equal(2, view.LastPass.Records);
        Assert.Equal(view.LastPass, reported);
        Assert.Contains(":2: malformed JSON", view.LastPass.SkipReasons[0]);
        Assert.Contains(":3: no 'text' field (the record starts: {\"body\":\"no text field\"})", view.LastPass.SkipReasons[1]);
        Assert.Contains(":4: field 'text' is empty", view.LastPass.SkipReasons[2]);
        Assert.Contains(":5: field 'text' is Number, expected a string", view.LastPass.SkipReasons[3]);
        Assert.Contains(log, m => m.Contains("4 skipped"));
    }

    [Fact]
    public void InvalidUtf8FailsWithTheByteOffset()
    {
        byte[] good = Encoding.UTF8.GetBytes("{\"text\":\"fine\"}\n");
        byte[] bad = [.. Encoding.UTF8.GetBytes("{\"text\":\"caf"), 0xC3, 0x28, .. Encoding.UTF8.GetBytes("\"}\n")];
        string path = _dir.Bytes("latin1.jsonl.zst", [.. good, .. bad]);
        var e = Assert.Throws<DataFileException>(() => ReadAll(new CorpusDataView(new CorpusOptions { Path = path })));
        long expectedOffset = good.Length + "{\"text\":\"caf".Length;
        Assert.Equal(expectedOffset, e.ByteOffset);
        Assert.Equal($"{path}:2: invalid UTF-8 at byte offset {expectedOffset}", e.Message);
    }

    [Fact]
    public void InvalidUtf8IsNotSkippedEvenWhenSkippingIsAllowed()
    {
        string path = _dir.Bytes("bad.txt", [(byte)'o', (byte)'k', (byte)'\n', 0xFF, (byte)'\n']);
        var view = new CorpusDataView(new CorpusOptions { Path = path, TextMode = TextDocumentMode.Line, OnBadRecord = BadRecordPolicy.SkipAndCount });
        var e = Assert.Throws<DataFileException>(() => ReadAll(view));
        Assert.Equal(3, e.ByteOffset);
    }

    [Fact]
    public void ALineOverTheLimitFailsBeforeItIsHeldWhole()
    {
        string longText = new string('x', 5000);
        string path = _dir.File("long.jsonl", "{\"text\":\"short\"}\n{\"text\":\"" + longText + "\"}\n");
        var view = new CorpusDataView(new CorpusOptions { Path = path, MaxRecordBytes = 1024 });
        var e = Assert.Throws<DataFileException>(() => ReadAll(view));
        Assert.Equal(2, e.Line);
        Assert.Contains("longer than the limit of 1,024 bytes", e.Message);
    }

    [Fact]
    public void EmptyInputFailsClearly()
    {
        string empty = _dir.File("empty.jsonl", "\n\n");
        var e = Assert.Throws<DataFileException>(() => ReadAll(new CorpusDataView(new CorpusOptions { Path = empty })));
        Assert.Contains("the corpus has no documents", e.Message);

        string allBad = _dir.File("allbad.jsonl", "nope\n");
        var skipped = Assert.Throws<DataFileException>(() =>
            ReadAll(new CorpusDataView(new CorpusOptions { Path = allBad, OnBadRecord = BadRecordPolicy.SkipAndCount })));
        Assert.Contains("all 1 records were skipped", skipped.Message);

        var missing = Assert.Throws<FileNotFoundException>(() => new CorpusDataView(new CorpusOptions { Path = Path.Combine(_dir.Path, "nothing", "*.jsonl") }));
        Assert.Contains("No files match", missing.Message);
        Directory.CreateDirectory(Path.Combine(_dir.Path, "emptyfolder"));
        var folder = Assert.Throws<FileNotFoundException>(() => new CorpusDataView(new CorpusOptions { Path = Path.Combine(_dir.Path, "emptyfolder") }));
        Assert.Contains("holds no data files", folder.Message);
    }

    [Fact]
    public void MetadataValuesOfAnyKindAreReadByPathAndOtherFieldsAreSkipped()
    {
        string path = _dir.File("kinds.jsonl",
            "{\"skip\": {\"text\": \"nested decoy\", \"deep\": [1, {\"a\": 2}]}, \"meta\": {\"n\": 3, \"tags\": [\"x\", \"y\"], \"obj\": {\"k\": true}, \"nil\": null}, \"text\": \"real\"}\n" +
            "{\"text\": \"second\", \"meta\": \"not an object\"}\n");
        var view = new CorpusDataView(new CorpusOptions { Path = path, MetadataFields = ["meta.n", "meta.tags", "meta.obj", "meta.nil", "meta.absent"] });
        var rows = ReadAll(view);
        Assert.Equal(["real", "3", "[\"x\", \"y\"]", "{\"k\": true}", "", ""], rows[0]);
        Assert.Equal(["second", "", "", "", "", ""], rows[1]);
    }

    [Theory]
    [InlineData("[1, 2]", "expected a JSON object, found Array")]
    [InlineData("{\"text\": \"a\"} {\"text\": \"b\"}", "malformed JSON ('{' is invalid after a single JSON value. Expected end of data, at column 15)")]
    [InlineData("{\"text\": \"a\",}", "malformed JSON")]
    public void NonObjectLinesAndTrailingDataAreMalformed(string line, string expected)
    {
        string path = _dir.File("odd.jsonl", line + "\n");
        var e = Assert.Throws<DataFileException>(() => ReadAll(new CorpusDataView(new CorpusOptions { Path = path })));
        Assert.StartsWith($"{path}:1: {expected}", e.Message);
    }

    [Fact]
    public void ALoneSurrogateEscapeIsABadRecordWithItsLocation()
    {
        string path = _dir.File("surrogate.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"broken \\ud800 pair\"}\n");
        var e = Assert.Throws<DataFileException>(() => ReadAll(new CorpusDataView(new CorpusOptions { Path = path })));
        Assert.StartsWith($"{path}:2: a JSON string cannot be read as text", e.Message);
        var skipping = new CorpusDataView(new CorpusOptions { Path = path, OnBadRecord = BadRecordPolicy.SkipAndCount });
        Assert.Equal(["ok"], ReadAll(skipping).Select(r => r[0]));
        Assert.Equal(1, skipping.LastPass!.Skipped);
    }

    [Theory]
    [InlineData("meta", "meta.pile_set_name")]
    [InlineData("meta.x", "meta.x")]
    [InlineData("text", "")]
    public void OverlappingFieldsAreRejectedUpFront(string first, string second)
    {
        string path = _dir.File("a.jsonl", "{\"text\":\"x\"}\n");
        var fields = new[] { first, second }.Where(f => f.Length > 0).ToArray();
        var e = Assert.Throws<ArgumentException>(() => new CorpusDataView(new CorpusOptions { Path = path, MetadataFields = fields }));
        Assert.Contains("overlap", e.Message);
    }

    [Fact]
    public void UnsupportedFilesInAGlobFailBeforeReading()
    {
        _dir.File("mixed/a.jsonl", "{\"text\":\"x\"}\n");
        string bad = _dir.File("mixed/b.parquet", "PAR1");
        var e = Assert.Throws<DataFileException>(() => new CorpusDataView(new CorpusOptions { Path = Path.Combine(_dir.Path, "mixed", "*") }));
        Assert.Equal(bad, e.FilePath);
        Assert.Contains("unsupported corpus file type", e.Message);
    }

    [Fact]
    public void TextDocumentsInAMixedFolderCarryNoMetadata()
    {
        _dir.File("mix/a.jsonl", "{\"text\":\"json doc\",\"url\":\"https://example.com\"}\n");
        _dir.File("mix/b.txt", "text doc");
        var rows = ReadAll(new CorpusDataView(new CorpusOptions { Path = Path.Combine(_dir.Path, "mix"), MetadataFields = ["url"] }));
        Assert.Equal(["json doc", "https://example.com"], rows[0]);
        Assert.Equal(["text doc", ""], rows[1]);
    }

    [Fact]
    public void MetadataOnTextFilesIsRejected()
    {
        string path = _dir.File("a.txt", "text");
        var e = Assert.Throws<ArgumentException>(() => new CorpusDataView(new CorpusOptions { Path = path, MetadataFields = ["url"] }));
        Assert.Contains("need JSON Lines input", e.Message);
    }

    [Fact]
    public void AskingForTheWrongTypeNamesTheColumnType()
    {
        string path = _dir.File("a.jsonl", "{\"text\":\"x\"}\n");
        var view = new CorpusDataView(new CorpusOptions { Path = path });
        using var cursor = view.GetRowCursor(view.Schema);
        var e = Assert.Throws<InvalidOperationException>(() => cursor.GetGetter<float>(view.Schema[0]));
        Assert.Contains("'Text' is text", e.Message);
    }

    [Fact]
    public void FeedsAnMLNetPipeline()
    {
        string path = _dir.File("a.jsonl", "{\"text\":\"red green\"}\n{\"text\":\"blue\"}\n");
        var view = _ml.Data.LoadCorpus(path);
        var tokens = _ml.Transforms.Text.TokenizeIntoWords("Words", "Text").Fit(view).Transform(view);
        var words = tokens.GetColumn<VBuffer<ReadOnlyMemory<char>>>("Words").Select(v => v.DenseValues().Count()).ToArray();
        Assert.Equal([2, 1], words);
    }
}
