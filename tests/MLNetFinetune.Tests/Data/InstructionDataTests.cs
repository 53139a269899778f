using System.Text;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tests.Data;

public class InstructionDataTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static string[] Column(DataFrame df, string name) => df[name].Cast<string>().ToArray();

    [Fact]
    public void LoadsQuestionAnswerJsonlIntoADataFrame()
    {
        string path = _dir.File("qa.jsonl",
            "{\"question\": \"What does Fit return?\", \"answer\": \"A transformer.\"}\n" +
            "{\"answer\": \"Yes, with .zst.\", \"question\": \"Can corpora be compressed?\", \"id\": 7}\n");
        var df = InstructionData.LoadJsonl(path);
        Assert.Equal(["question", "answer"], df.Columns.Select(c => c.Name));
        Assert.Equal(["What does Fit return?", "Can corpora be compressed?"], Column(df, "question"));
        Assert.Equal(["A transformer.", "Yes, with .zst."], Column(df, "answer"));
    }

    [Fact]
    public void DetectsAlpacaAndTreatsAMissingInputAsEmpty()
    {
        string path = _dir.File("alpaca.jsonl.gz",
            "{\"instruction\": \"Add the numbers.\", \"input\": \"2 and 3\", \"output\": \"5\"}\n" +
            "{\"instruction\": \"Name a primary colour.\", \"output\": \"Red\"}\n");
        var df = InstructionData.Load(path);
        Assert.Equal(["instruction", "input", "output"], df.Columns.Select(c => c.Name));
        Assert.Equal(["2 and 3", ""], Column(df, "input"));
    }

    [Fact]
    public void LoadsPromptCompletionCsvWithQuotedMultilineFields()
    {
        string path = _dir.File("pc.csv", "prompt,completion\n\"Say hi,\nthen stop\",\"Hi.\"\nCount to two,\"1, 2\"\n");
        var df = InstructionData.LoadCsv(path);
        Assert.Equal(["prompt", "completion"], df.Columns.Select(c => c.Name));
        Assert.Equal(["Say hi,\nthen stop", "Count to two"], Column(df, "prompt"));
        Assert.Equal(["Hi.", "1, 2"], Column(df, "completion"));
    }

    [Fact]
    public void FieldMapRenamesOtherLayoutsOntoAKnownOne()
    {
        string path = _dir.File("custom.jsonl", "{\"Q\": \"Why?\", \"A\": \"Because.\"}\n");
        var df = InstructionData.LoadJsonl(path, new InstructionDataOptions { FieldMap = new Dictionary<string, string> { ["Q"] = "question", ["A"] = "answer" } });
        Assert.Equal(["Why?"], Column(df, "question"));
        Assert.Equal(["Because."], Column(df, "answer"));
    }

    [Fact]
    public void AnUnknownLayoutNamesTheFieldsItFound()
    {
        string path = _dir.File("odd.jsonl", "{\"Q\": \"Why?\", \"A\": \"Because.\"}\n");
        var e = Assert.Throws<DataFileException>(() => InstructionData.LoadJsonl(path));
        Assert.Equal($"{path}:1: cannot tell the layout from the fields (Q, A): expected question/answer, instruction/input/output, prompt/completion or messages; map other names with InstructionDataOptions.FieldMap", e.Message);
    }

    [Fact]
    public void BadRecordsFailWithLineAndFieldOrAreSkippedAndCounted()
    {
        string path = _dir.File("qa.jsonl",
            "{\"question\": \"Q1\", \"answer\": \"A1\"}\n" +
            "{\"question\": \"Q2\"}\n" +
            "{\"question\": \"Q3\", \"answer\": \"  \"}\n" +
            "{\"question\": \"Q4\", \"answer\": [\"A\", \"B\"]}\n" +
            "{\"question\": \"Q5\", \"answer\": \n" +
            "{\"question\": \"Q6\", \"answer\": \"A6\"}\n");
        var e = Assert.Throws<DataFileException>(() => InstructionData.LoadJsonl(path));
        Assert.Equal($"{path}:2: missing field 'answer' (the record has: question)", e.Message);
        Assert.Equal("answer", e.Field);

        DataLoadReport? report = null;
        var ml = new MLContext(0);
        var log = new List<string>();
        ml.Log += (_, a) => { if (a.Source == "InstructionData") log.Add(a.Message); };
        var df = ml.Data.LoadInstructionData(path, new InstructionDataOptions
        {
            OnBadRecord = BadRecordPolicy.SkipAndCount,
            Progress = new SynchronousProgress<DataLoadReport>(r => report = r),
        });
        Assert.Equal(["Q1", "Q6"], Column(df, "question"));
        Assert.Equal(4, report!.Skipped);
        Assert.Contains(":3: field 'answer' is empty", report.SkipReasons[1]);
        Assert.Contains(":4: field 'answer' is an object or array; it must be text", report.SkipReasons[2]);
        Assert.Contains(":5: malformed JSON", report.SkipReasons[3]);
        Assert.Contains(log, m => m.Contains("4 skipped"));
    }

    [Fact]
    public void CsvErrorsNameTheLine()
    {
        string ragged = _dir.File("ragged.csv", "question,answer\nQ1,A1\nQ2,A2,extra\n");
        var e = Assert.Throws<DataFileException>(() => InstructionData.LoadCsv(ragged));
        Assert.Equal($"{ragged}:3: malformed CSV: 3 fields where the header has 2", e.Message);

        string multiline = _dir.File("multi.csv", "question,answer\n\"Q1\nstill Q1\",A1\nQ2,\n");
        var missing = Assert.Throws<DataFileException>(() => InstructionData.LoadCsv(multiline));
        Assert.Equal($"{multiline}:4: field 'answer' is empty", missing.Message);

        byte[] bytes = [.. Encoding.UTF8.GetBytes("question,answer\nQ1,caf"), 0xE9, (byte)'\n'];
        string latin1 = _dir.Bytes("latin1.csv", bytes);
        var utf8 = Assert.Throws<DataFileException>(() => InstructionData.LoadCsv(latin1));
        Assert.Equal($"{latin1}:2: invalid UTF-8 at byte offset 22", utf8.Message);
    }

    [Fact]
    public void NullFieldsAreNamedAsNullAndAllSkippedIsReported()
    {
        string path = _dir.File("nulls.jsonl", "{\"question\": \"Q1\", \"answer\": \"A1\"}\n{\"question\": \"Q2\", \"answer\": null}\n");
        Assert.Equal($"{path}:2: field 'answer' is null", Assert.Throws<DataFileException>(() => InstructionData.LoadJsonl(path)).Message);

        string garbage = _dir.File("garbage.jsonl", "not json\nstill not\n");
        var e = Assert.Throws<DataFileException>(() => InstructionData.LoadJsonl(garbage, new InstructionDataOptions { OnBadRecord = BadRecordPolicy.SkipAndCount }));
        Assert.StartsWith($"{garbage}: no usable records: all 2 were skipped (first: {garbage}:1: malformed JSON", e.Message);
    }

    [Fact]
    public void BadCsvQuotingFailsWithTheRow()
    {
        string path = _dir.File("quotes.csv", "question,answer\nQ1,A1\nQ\"2,A2\n");
        var e = Assert.Throws<DataFileException>(() => InstructionData.LoadCsv(path));
        Assert.StartsWith($"{path}:3: malformed CSV", e.Message);
    }

    [Fact]
    public void EmptyAndMissingFilesFailClearly()
    {
        string empty = _dir.File("empty.jsonl", "");
        Assert.Equal($"{empty}: the file holds no records", Assert.Throws<DataFileException>(() => InstructionData.LoadJsonl(empty)).Message);
        string emptyCsv = _dir.File("empty.csv", "");
        Assert.Contains("the file is empty", Assert.Throws<DataFileException>(() => InstructionData.LoadCsv(emptyCsv)).Message);
        string none = Path.Combine(_dir.Path, "none.jsonl");
        Assert.Equal($"Instruction data file '{none}' does not exist.", Assert.Throws<FileNotFoundException>(() => InstructionData.Load(none)).Message);
        var ext = Assert.Throws<ArgumentException>(() => InstructionData.Load(_dir.File("pairs.parquet", "x")));
        Assert.Contains(".jsonl, .json (JSON Lines) or .csv", ext.Message);
    }

    [Fact]
    public void ALineOverTheLimitFails()
    {
        string path = _dir.File("long.jsonl", "{\"question\": \"" + new string('q', 3000) + "\", \"answer\": \"a\"}\n");
        var e = Assert.Throws<DataFileException>(() => InstructionData.LoadJsonl(path, new InstructionDataOptions { MaxRecordBytes = 1000 }));
        Assert.Equal(1, e.Line);
        Assert.Contains("longer than the limit of 1,000 bytes", e.Message);
    }
}
