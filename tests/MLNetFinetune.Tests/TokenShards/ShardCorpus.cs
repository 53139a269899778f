using System.IO.Compression;
using System.Text;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.TokenShards;

/// <summary>
/// A corpus folder of four inputs cut from the bundled corpora, one of each kind the stage reads (.jsonl.zst, .jsonl,
/// .jsonl.gz, .txt), the bundled model's tokenizer, and the ids each input's documents should become.
/// </summary>
public sealed class ShardCorpus : IDisposable
{
    readonly TempDirectory _dir = new();

    public ShardCorpus()
    {
        Folder = Path.Combine(_dir.Path, "corpus");
        Directory.CreateDirectory(Folder);
        File.Copy(RepoPaths.Of("examples", "data", "pretraining_sample.jsonl.zst"), Path.Combine(Folder, "a.jsonl.zst"));
        string[] facts;
        using (var reader = new StreamReader(DataFiles.OpenRead(RepoPaths.Of("examples", "data", "facts", "corpus.jsonl.zst"))))
            facts = Enumerable.Range(0, 300).Select(_ => reader.ReadLine()!).ToArray();
        File.WriteAllLines(Path.Combine(Folder, "b.jsonl"), facts[..120]);
        using (var gz = new GZipStream(File.Create(Path.Combine(Folder, "c.jsonl.gz")), CompressionLevel.Fastest))
            gz.Write(Encoding.UTF8.GetBytes(string.Join("\n", facts[120..]) + "\n"));
        File.WriteAllText(Path.Combine(Folder, "d.txt"), File.ReadAllText(RepoPaths.Of("examples", "data", "facts", "SOURCES.md")));
        Inputs = DataFiles.Resolve(Folder, CorpusOptions.SupportedExtensions);
        Expected = Inputs.Select(input => Documents(input).Select(text => (int[])[.. Tokenizer.Encode(text), Tokenizer.EosId!.Value]).ToArray()).ToArray();
    }

    public static TextTokenizer Tokenizer { get; } = TextTokenizer.Load(RepoPaths.Of("models", "facts-base"));

    public string Folder { get; }

    /// <summary>The inputs in the order the stage takes them.</summary>
    public IReadOnlyList<string> Inputs { get; }

    /// <summary>Per input, per document: the tokenizer's ids followed by the end-of-text id.</summary>
    public int[][][] Expected { get; }

    public int[] AllIds => Expected.SelectMany(shard => shard.SelectMany(d => d)).ToArray();

    public string NewFolder(string name) => Path.Combine(_dir.Path, name);

    static IEnumerable<string> Documents(string input)
    {
        var view = new MLContext().Data.LoadCorpus(input);
        using var cursor = view.GetRowCursor(view.Schema);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(view.Schema["Text"]);
        ReadOnlyMemory<char> text = default;
        while (cursor.MoveNext())
        {
            getter(ref text);
            yield return text.ToString();
        }
    }

    public void Dispose() => _dir.Dispose();
}
