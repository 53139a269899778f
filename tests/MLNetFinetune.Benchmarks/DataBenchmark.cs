using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Streams a generated Pile-style JSON Lines corpus (default 1 GiB) through <see cref="CorpusDataView"/>, reading the
/// text and one nested metadata field of every document. Reports MB/s (10^6 bytes of file per second) and peak RSS.
/// Options: --size-mb N (default 1024 MiB), --dir PATH (default: the temp folder; the corpus is reused when present),
/// --zst (read a zstd-compressed copy, as the Pile ships; MB/s still counts uncompressed bytes).
/// </summary>
static class DataBenchmark
{
    public static Task<int> RunAsync(string[] args)
    {
        long sizeBytes = (long)(BenchmarkArgs.Value(args, "--size-mb") is { } mb ? double.Parse(mb) * (1 << 20) : 1L << 30);
        string dir = BenchmarkArgs.TempDir(args);
        string path = Path.Combine(dir, $"pile-style-{sizeBytes >> 20}MiB.jsonl");
        if (!File.Exists(path) || new FileInfo(path).Length < sizeBytes)
        {
            Console.WriteLine($"generating {path} …");
            Generate(path, sizeBytes);
        }
        if (args.Contains("--zst"))
        {
            // The Pile's own packaging: the same corpus zstd-compressed; MB/s still counts uncompressed bytes.
            string zst = path + ".zst";
            if (!File.Exists(zst))
            {
                Console.WriteLine($"compressing {zst} …");
                DataFiles.WriteAtomically(zst, output => { using var input = File.OpenRead(path); input.CopyTo(output); });
            }
            path = zst;
        }
        long fileBytes = new FileInfo(path.EndsWith(".zst") ? path[..^4] : path).Length;

        var ml = new MLContext(seed: 0);
        var corpus = ml.Data.LoadCorpus(new CorpusOptions { Path = path, MetadataFields = ["meta.pile_set_name"] });
        GC.Collect();
        ProcessMemory.ResetPeak();
        var clock = Stopwatch.StartNew();
        long documents = 0, chars = 0;
        using (var cursor = corpus.GetRowCursor(corpus.Schema))
        {
            var text = cursor.GetGetter<ReadOnlyMemory<char>>(corpus.Schema[0]);
            var source = cursor.GetGetter<ReadOnlyMemory<char>>(corpus.Schema[1]);
            ReadOnlyMemory<char> t = default, s = default;
            while (cursor.MoveNext())
            {
                text(ref t);
                source(ref s);
                chars += t.Length + s.Length;
                if (++documents % 100_000 == 0)
                    Console.WriteLine($"{documents:N0} documents, {clock.Elapsed.TotalSeconds:F1} s");
            }
        }
        double seconds = clock.Elapsed.TotalSeconds;
        var result = new
        {
            benchmark = "data",
            file = Path.GetFileName(path),
            file_mb = Math.Round(fileBytes / 1e6, 1),
            documents,
            chars,
            seconds = Math.Round(seconds, 2),
            mb_per_s = Math.Round(fileBytes / 1e6 / seconds, 1),
            peak_rss_mb = Math.Round(ProcessMemory.PeakRssMb(), 1),
            cores = Environment.ProcessorCount,
        };
        Console.WriteLine(JsonSerializer.Serialize(result));
        return Task.FromResult(0);
    }

    // Non-ASCII as raw UTF-8 (as C4 and most corpora store it), so validation and transcoding see multi-byte text.
    static readonly JsonSerializerOptions RawUtf8 = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    // Documents of 200 B – 20 KB of word salad with what real corpora have: some non-ASCII, a paragraph break every
    // ~60 words, a quoted word every ~50, now and then a tab or a backslash (each an escape in the JSON).
    static void Generate(string path, long sizeBytes)
    {
        string[] words = ["the", "model", "river", "data", "token", "über", "naïve", "東京", "learning", "corpus", "\"quoted\"", "a",
            "to", "café", "ratio", "of", "and", "gradient", "42", "3.14", "in", "<html>", "{json}", "is", "for", "that", "with",
            "on", "as", "was", "by", "it", "from", "this", "be", "are", "at", "or", "an", "which", "has", "their", "more", "also",
            "between", "language", "network", "training", "results", "method", "system", "function", "value", "section", "table",
            "figure", "result", "number", "time", "state", "court", "patient", "study", "cells", "protein", "claim", "device",
            "layer", "weights", "tab\there", "C:\\path", "emoji🚆", "line", "page", "user", "code", "return", "int", "class"];
        string[] sources = ["Pile-CC", "Github", "ArXiv", "Wikipedia (en)", "StackExchange", "PubMed Abstracts", "FreeLaw", "USPTO Backgrounds"];
        var random = new Random(1234);
        var sb = new StringBuilder();
        long written = 0;
        DataFiles.WriteAtomically(path, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false), 1 << 20, leaveOpen: true);
            while (written < sizeBytes)
            {
                sb.Clear();
                int length = random.Next(30, 3000);
                for (int w = 0; w < length; w++)
                    sb.Append(words[random.Next(words.Length)]).Append(w % 60 == 59 ? ".\n\n" : w % 17 == 16 ? ". " : " ");
                string line = JsonSerializer.Serialize(new { text = sb.ToString(), meta = new { pile_set_name = sources[random.Next(sources.Length)] } }, RawUtf8);
                writer.Write(line);
                writer.Write('\n');
                written += Encoding.UTF8.GetByteCount(line) + 1;
            }
        });
    }
}
