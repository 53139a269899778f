using System.Buffers.Binary;
using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Fuzzes the file readers: starting from small valid files (written here, or the repository's examples/data and
/// models/facts-base), each case applies 1–3 random mutations — bit flips, truncation, random bytes, JSON tokens,
/// duplicated/removed/swapped lines, huge numbers, wrong value types, invalid UTF-8, deep nesting, byte-order marks,
/// CRLF, NULs, safetensors header lengths out of range — and runs the reader. A reader must accept the file or throw
/// its documented error with a location (a <see cref="DataFileException"/> naming the file, or an
/// <see cref="InvalidDataException"/> whose message names it); anything else, a hang (10 s per case) or a file left
/// beside the input is a bug. Options: --seconds N (default 60), --seed S (default 0), --dir PATH; --kind K --case N
/// replays one case. Exits 1 when a bug was seen.
/// </summary>
static class FuzzBenchmark
{
    static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(10);

    sealed class Counts
    {
        public long Cases, Accepted, Rejected, Bugs;
    }

    sealed record Bug(string Kind, long Case, string What, string Detail);

    sealed record Target(string Name, Func<Random, Dictionary<string, byte[]>> Make, Action<string, Random> Read);

    public static Task<int> RunAsync(string[] args)
    {
        double seconds = BenchmarkArgs.Value(args, "--seconds") is { } s ? double.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : 60;
        int seed = BenchmarkArgs.Int(args, "--seed", 0);
        string root = Path.Combine(BenchmarkArgs.TempDir(args), $"fuzz-{Environment.ProcessId}");
        var targets = Targets();
        var counts = targets.ToDictionary(t => t.Name, _ => new Counts());
        var bugs = new List<Bug>();
        var signatures = new Dictionary<string, (long Count, Bug First)>();

        if (BenchmarkArgs.Value(args, "--case") is { } replay)
        {
            var target = targets.Single(t => t.Name == BenchmarkArgs.Value(args, "--kind"));
            RunCase(target, seed, long.Parse(replay), root, counts[target.Name], bugs, signatures, verbose: true);
            foreach (var bug in bugs) Console.WriteLine($"BUG {bug.Kind} case {bug.Case}: {bug.What}\n{bug.Detail}");
            if (bugs.Count == 0) Directory.Delete(root, recursive: true);
            return Task.FromResult(bugs.Count > 0 ? 1 : 0);
        }

        Console.WriteLine($"fuzzing {string.Join(", ", targets.Select(t => t.Name))} for {seconds:F0} s, seed {seed}, in {root}");
        var clock = Stopwatch.StartNew();
        var lastReport = TimeSpan.Zero;
        long caseNumber = 0;
        while (clock.Elapsed.TotalSeconds < seconds)
        {
            var target = targets[(int)(caseNumber % targets.Count)];
            RunCase(target, seed, caseNumber, root, counts[target.Name], bugs, signatures, verbose: false);
            caseNumber++;
            if (clock.Elapsed - lastReport >= TimeSpan.FromSeconds(30))
            {
                lastReport = clock.Elapsed;
                Console.WriteLine($"{clock.Elapsed.TotalSeconds:F0} s: {caseNumber:N0} cases, " +
                    string.Join(", ", counts.Select(c => $"{c.Key} {c.Value.Cases}/{c.Value.Accepted}/{c.Value.Rejected}/{c.Value.Bugs}")) + " (cases/accepted/rejected/bugs)");
            }
        }
        try { Directory.Delete(root, recursive: true); } catch (IOException) { } // a hung case may still hold a file

        foreach (var bug in bugs.Take(5))
            Console.WriteLine($"\nBUG {bug.Kind} case {bug.Case} (reproduce: fuzz --seed {seed} --kind {bug.Kind} --case {bug.Case}): {bug.What}\n{bug.Detail}");
        if (signatures.Count > 0)
        {
            Console.WriteLine("\ndistinct bugs (kind, exception, where): count, first case");
            foreach (var (signature, (n, first)) in signatures)
                Console.WriteLine($"  {signature}: {n}, case {first.Case}: {first.What.ReplaceLineEndings(" ")[..Math.Min(first.What.Length, 300)]}");
        }
        var result = new
        {
            benchmark = "fuzz",
            seed,
            seconds = Math.Round(clock.Elapsed.TotalSeconds, 1),
            cases = caseNumber,
            cases_per_s = Math.Round(caseNumber / clock.Elapsed.TotalSeconds, 1),
            kinds = counts.ToDictionary(c => c.Key, c => new { cases = c.Value.Cases, accepted = c.Value.Accepted, rejected = c.Value.Rejected, bugs = c.Value.Bugs }),
            bugs = bugs.Count,
            distinct_bugs = signatures.Count,
            cores = Environment.ProcessorCount,
        };
        Console.WriteLine(JsonSerializer.Serialize(result));
        return Task.FromResult(bugs.Count > 0 ? 1 : 0);
    }

    static void RunCase(Target target, int seed, long caseNumber, string root, Counts counts, List<Bug> bugs, Dictionary<string, (long Count, Bug First)> signatures, bool verbose)
    {
        // string.GetHashCode and HashCode are seeded per process; a case must replay from (seed, case) alone.
        var random = new Random(unchecked((int)(((ulong)seed * 0x9E3779B97F4A7C15UL) ^ ((ulong)caseNumber * 0xBF58476D1CE4E5B9UL) >> 17)));
        var files = target.Make(random);
        string dir = Path.Combine(root, $"{target.Name}-{caseNumber}");
        Directory.CreateDirectory(dir);
        foreach (var (name, bytes) in files) File.WriteAllBytes(Path.Combine(dir, name), bytes);
        counts.Cases++;
        if (verbose) foreach (var (name, bytes) in files) Console.WriteLine($"{name}: {bytes.Length} bytes in {dir}");

        var options = new Random(random.Next());
        var task = Task.Run(() => target.Read(dir, options));
        Exception? error = null;
        try
        {
            if (!task.Wait(CaseTimeout))
            {
                Record(new Bug(target.Name, caseNumber, $"no answer within {CaseTimeout.TotalSeconds:F0} s (hang)", ""), "hang");
                return; // the folder stays: the reader may still hold it
            }
        }
        catch (AggregateException e)
        {
            error = e.InnerException;
        }

        var left = Directory.GetFiles(dir).Select(Path.GetFileName).Except(files.Keys).ToList();
        if (left.Count > 0) Record(new Bug(target.Name, caseNumber, $"left files beside the input: {string.Join(", ", left)}", ""), "partial output");
        else if (error == null) counts.Accepted++;
        else if (IsDocumented(error, dir))
        {
            counts.Rejected++;
            if (verbose) Console.WriteLine($"rejected: {error.GetType().Name}: {error.Message}");
        }
        else Record(new Bug(target.Name, caseNumber, $"{error.GetType().FullName}: {error.Message}", error.ToString()),
            $"{error.GetType().Name} at {TopFrame(error)}");
        Directory.Delete(dir, recursive: true);

        void Record(Bug bug, string signature)
        {
            counts.Bugs++;
            bugs.Add(bug);
            string key = $"{target.Name}, {signature}";
            signatures[key] = signatures.TryGetValue(key, out var seen) ? (seen.Count + 1, seen.First) : (1, bug);
        }
    }

    // The documented errors: DataFileException naming a file of the case, or InvalidDataException whose message names one.
    static bool IsDocumented(Exception e, string dir) => e switch
    {
        DataFileException d => d.FilePath.StartsWith(dir, StringComparison.Ordinal),
        InvalidDataException i => i.Message.Contains(dir, StringComparison.Ordinal),
        _ => false,
    };

    static string TopFrame(Exception e)
    {
        var frame = new StackTrace(e, fNeedFileInfo: false).GetFrames()
            .FirstOrDefault(f => f.GetMethod()?.DeclaringType?.Namespace?.StartsWith("MLNetFinetune", StringComparison.Ordinal) == true);
        var method = frame?.GetMethod();
        return method == null ? "?" : $"{method.DeclaringType?.Name}.{method.Name}";
    }

    // ---- the readers and their seed files ----

    static List<Target> Targets()
    {
        string repo = FindRepository();
        byte[] Repo(params string[] parts) => File.ReadAllBytes(Path.Combine([repo, .. parts]));
        byte[][] pairsJsonl = [Repo("examples", "data", "mlnet_finetune_docs.jsonl"), Repo("examples", "data", "alpaca_sample.jsonl"), Utf8(PairsJsonl)];
        byte[][] corpus = [Utf8(CorpusJsonl)];
        byte[][] csv = [Utf8(PairsCsv)];
        byte[][] safetensors = [WrittenSafeTensors(), Utf8Header(MixedSafeTensors())];
        byte[] config = Repo("models", "facts-base", "config.json");
        byte[] tokenizerJson = SmallTokenizerJson(Repo("models", "facts-base", "tokenizer.json"));
        byte[] vocab = Repo("models", "facts-base", "vocab.json"), merges = Repo("models", "facts-base", "merges.txt");

        return
        [
            new("jsonl_pairs", r => One("pairs.jsonl", Mutate(r, Pick(r, pairsJsonl))), (dir, r) =>
            {
                var frame = InstructionData.LoadJsonl(Path.Combine(dir, "pairs.jsonl"), new InstructionDataOptions { ExtraFields = r.Next(3) == 0 ? ["kind"] : [] });
                Check(frame.Rows.Count > 0 && frame.Columns.All(c => c.NullCount == 0), "a loaded frame has rows and no nulls");
            }),
            new("csv_pairs", r => One("pairs.csv", Mutate(r, Pick(r, csv))), (dir, r) =>
            {
                var frame = InstructionData.LoadCsv(Path.Combine(dir, "pairs.csv"));
                Check(frame.Rows.Count > 0 && frame.Columns.All(c => c.NullCount == 0), "a loaded frame has rows and no nulls");
            }),
            new("safetensors", r => One("model.safetensors", MutateSafeTensors(r, Pick(r, safetensors))), (dir, r) =>
            {
                using var file = SafeTensorsFile.Open(Path.Combine(dir, "model.safetensors"));
                foreach (var info in file.Tensors.Values)
                {
                    if (info.DType is "F32" or "F16" or "BF16" or "F64") Check(file.ReadFloat32(info.Name).Length == info.ElementCount, "element count");
                    else Check(file.ReadBytes(info.Name).LongLength == info.End - info.Begin, "byte count");
                }
            }),
            new("config", r => One("config.json", Mutate(r, config)), (dir, r) =>
            {
                var c = ModelConfig.Load(Path.Combine(dir, "config.json"));
                Check(c.HeadDim > 0 && c.RotaryDim >= 0 && c.ParameterCount() > 0, "a loaded config has a positive shape");
            }),
            new("tokenizer_json", r => One("tokenizer.json", Mutate(r, tokenizerJson)), (dir, _) => Tokenize(TextTokenizer.Load(dir))),
            new("vocab_merges", r =>
            {
                int which = r.Next(3);
                return new Dictionary<string, byte[]>
                {
                    ["vocab.json"] = which != 1 ? Mutate(r, vocab) : vocab,
                    ["merges.txt"] = which != 0 ? Mutate(r, merges) : merges,
                };
            }, (dir, _) => Tokenize(TextTokenizer.Load(dir))),
            new("corpus_jsonl", r => One("corpus.jsonl", Mutate(r, Pick(r, corpus))), (dir, r) =>
            {
                var view = new MLContext(seed: 0).Data.LoadCorpus(new CorpusOptions
                {
                    Path = Path.Combine(dir, "corpus.jsonl"), MetadataFields = ["meta.pile_set_name", "id"],
                    OnBadRecord = r.Next(2) == 0 ? BadRecordPolicy.Fail : BadRecordPolicy.SkipAndCount,
                });
                using var cursor = view.GetRowCursor(view.Schema);
                var getters = view.Schema.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToArray();
                ReadOnlyMemory<char> value = default;
                long rows = 0;
                while (cursor.MoveNext())
                {
                    rows++;
                    foreach (var g in getters) g(ref value);
                }
                Check(rows > 0, "a corpus that reads has documents");
            }),
        ];
    }

    // Every id in range, decoding works; what the mutated vocabulary does to a text is not checked.
    static void Tokenize(TextTokenizer tokenizer)
    {
        Check(tokenizer.VocabSize > 0, $"VocabSize {tokenizer.VocabSize} is positive");
        const string text = "Hello, wörld! The capital of Peru is Lima. 東京 🚆  tabs\tand\nlines 12345 <|endoftext|>";
        var ids = tokenizer.Encode(text);
        Check(ids.All(id => id >= 0 && id < tokenizer.VocabSize), $"every id is in [0, {tokenizer.VocabSize})");
        tokenizer.Decode(ids);
    }

    static void Check(bool ok, string invariant)
    {
        if (!ok) throw new InvariantException(invariant);
    }

    sealed class InvariantException(string invariant) : Exception($"invariant broken on an accepted file: {invariant}");

    static Dictionary<string, byte[]> One(string name, byte[] bytes) => new() { [name] = bytes };

    static byte[] Pick(Random r, byte[][] seeds) => seeds[r.Next(seeds.Length)];

    static byte[] Utf8(string text) => Encoding.UTF8.GetBytes(text);

    static string FindRepository()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
            for (var dir = new DirectoryInfo(start); dir != null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "MLNetFinetune.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException("run inside the repository: the fuzzer starts from examples/data and models/facts-base");
    }

    const string PairsJsonl =
        "{\"question\":\"What is the capital of Peru?\",\"answer\":\"Lima\",\"kind\":\"recall\",\"n\":3}\n" +
        "{\"question\":\"Ünïcödé \\\"quoted\\\" \\\\ tab\\t and \\u00e9?\",\"answer\":\"東京 🚆\",\"kind\":\"extraction\",\"meta\":{\"a\":[1,2]}}\n" +
        "\n" +
        "{\"question\":\"Multi\\nline?\",\"answer\":\"Yes\\r\\nreally\",\"kind\":\"recall\",\"score\":1.5e3,\"ok\":true,\"none\":null}\n";

    const string PairsCsv =
        "question,answer,kind\r\n" +
        "What is ML.NET?,A machine learning framework for .NET.,intro\r\n" +
        "\"Multi-line\nquestion?\",\"Yes, \"\"quoted\"\" and, comma\",misc\r\n" +
        "Ünïcödé?,東京 🚆,misc\n";

    const string CorpusJsonl =
        "{\"text\":\"First document.\\n\\nA second paragraph.\",\"meta\":{\"pile_set_name\":\"Pile-CC\"},\"id\":1}\n" +
        "{\"id\":\"two\",\"meta\":{\"pile_set_name\":\"Github\",\"extra\":[1,{\"x\":null}]},\"text\":\"def f(x):\\n\\treturn x\"}\n" +
        "   \n" +
        "{\"text\":\"Ünïcödé 東京 🚆 \\\"quoted\\\"\",\"meta\":{}}\n";

    // Three float32 tensors as our writer lays them out.
    static byte[] WrittenSafeTensors()
    {
        string temp = Path.Combine(Path.GetTempPath(), $"fuzz-seed-{Environment.ProcessId}.safetensors");
        SafeTensorsFile.WriteFloat32(temp,
        [
            ("a.weight", [2, 3], [1, 2, 3, 4, 5, 6]),
            ("a.bias", [3], [0.5f, -0.5f, 0]),
            ("scalar", [], [42]),
        ], new Dictionary<string, string> { ["format"] = "pt" });
        byte[] bytes = File.ReadAllBytes(temp);
        File.Delete(temp);
        return bytes;
    }

    // Other dtypes, an empty tensor, metadata, and the header unpadded.
    static (JsonObject Header, byte[] Data) MixedSafeTensors()
    {
        var header = new JsonObject
        {
            ["__metadata__"] = new JsonObject { ["format"] = "pt", ["note"] = "mixed" },
            ["h"] = new JsonObject { ["dtype"] = "F16", ["shape"] = new JsonArray(2), ["data_offsets"] = new JsonArray(0, 4) },
            ["b"] = new JsonObject { ["dtype"] = "BF16", ["shape"] = new JsonArray(1, 2), ["data_offsets"] = new JsonArray(4, 8) },
            ["i"] = new JsonObject { ["dtype"] = "I64", ["shape"] = new JsonArray(1), ["data_offsets"] = new JsonArray(8, 16) },
            ["d"] = new JsonObject { ["dtype"] = "F64", ["shape"] = new JsonArray(1), ["data_offsets"] = new JsonArray(16, 24) },
            ["e"] = new JsonObject { ["dtype"] = "F32", ["shape"] = new JsonArray(0, 5), ["data_offsets"] = new JsonArray(24, 24) },
            ["m"] = new JsonObject { ["dtype"] = "BOOL", ["shape"] = new JsonArray(2), ["data_offsets"] = new JsonArray(24, 26) },
        };
        byte[] data = [0x00, 0x3C, 0x00, 0xC0, 0x80, 0x3F, 0x00, 0x40, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xF0, 0x3F, 1, 0];
        return (header, data);
    }

    static byte[] Utf8Header((JsonObject Header, byte[] Data) parts) => SafeTensorsBytes(Encoding.UTF8.GetBytes(parts.Header.ToJsonString()), parts.Data);

    static byte[] SafeTensorsBytes(byte[] header, ReadOnlySpan<byte> data)
    {
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes.AsSpan(8 + header.Length));
        return bytes;
    }

    // facts-base's tokenizer.json with its vocabulary cut to the 256 byte tokens, the specials and the merges that stay
    // inside them: a valid file a tenth of the size, so a case is cheap.
    static byte[] SmallTokenizerJson(byte[] full)
    {
        var root = JsonNode.Parse(full)!.AsObject();
        var model = root["model"]!.AsObject();
        var vocab = model["vocab"]!.AsObject();
        var keep = vocab.Where(kv => kv.Value!.GetValue<int>() < 400).Select(kv => (kv.Key, kv.Value!.GetValue<int>())).ToList();
        var kept = keep.Select(k => k.Key).ToHashSet();
        model["vocab"] = new JsonObject(keep.Select(k => KeyValuePair.Create(k.Key, (JsonNode?)k.Item2)));
        model["merges"] = new JsonArray(model["merges"]!.AsArray().Select(m => m!.GetValue<string>())
            .Where(m => m.Split(' ') is [var a, var b] && kept.Contains(a) && kept.Contains(b) && kept.Contains(a + b))
            .Select(m => (JsonNode)m).ToArray());
        return Encoding.UTF8.GetBytes(root.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }));
    }

    // ---- mutations ----

    static readonly string[] JsonTokens =
    [
        "{", "}", "[", "]", "\"", ":", ",", "null", "true", "false", "-", "0", "1e999", "-1", "99999999999999999999999", "NaN",
        "\"\\ud800\"", "\"\\u0000\"", "\\", "\\u", "\n", "\r\n", "\"\"", "{}", "[]", "\"question\":", "\"text\":", ",\"answer\":1",
        "/*c*/", "//", "'", "\t", " ", "\u00a0", "\"a\":\"b\",\"a\":\"c\"",
    ];

    static readonly string[] Numbers =
    [
        "99999999999999999999999", "-1", "1e309", "-9223372036854775809", "9223372036854775807", "2147483647", "2147483648", "-2147483648",
        "0", "1.5", "-0", "1e-400", "\"7\"", "null", "[]", "{}", "true", "NaN", "4294967296", "18446744073709551615", "100000000",
    ];

    static readonly string[] WrongValues =
    [
        "123", "null", "[]", "{}", "true", "\"\"", "\"\\ud800\"", "\"\\udc00x\"", "\"\\u0000\"", "[\"a\",\"b\"]", "{\"a\":1}", "-5", "1e999", "\"   \"",
    ];

    static readonly byte[][] InvalidUtf8 = [[0xFF], [0xC0, 0x80], [0x80], [0xE2, 0x82], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xF0, 0x9F, 0x9A]];

    static byte[] Mutate(Random r, byte[] input)
    {
        var b = input;
        for (int n = 1 + r.Next(3); n > 0; n--) b = MutateOnce(r, b);
        return b;
    }

    static byte[] MutateOnce(Random r, byte[] b)
    {
        int At() => r.Next(b.Length + 1);
        switch (r.Next(16))
        {
            case 0: // bit flip
                if (b.Length == 0) return b;
                b = (byte[])b.Clone();
                b[r.Next(b.Length)] ^= (byte)(1 << r.Next(8));
                return b;
            case 1: // truncate
                return b[..r.Next(b.Length + 1)];
            case 2: // random bytes
            {
                var junk = new byte[1 + r.Next(8)];
                r.NextBytes(junk);
                return Insert(b, At(), junk);
            }
            case 3:
                return Insert(b, At(), Utf8(JsonTokens[r.Next(JsonTokens.Length)]));
            case 4: // duplicate, remove or swap lines
            case 5:
            case 6:
            {
                var lines = SplitLines(b);
                if (lines.Count == 0) return b;
                int i = r.Next(lines.Count), j = r.Next(lines.Count);
                switch (r.Next(3))
                {
                    case 0: lines.Insert(j, lines[i]); break;
                    case 1: lines.RemoveAt(i); break;
                    default: (lines[i], lines[j]) = (lines[j], lines[i]); break;
                }
                return lines.SelectMany(l => l).ToArray();
            }
            case 7: // a number replaced: huge, negative, fractional, or another type
                return ReplaceToken(r, b, IsNumberStart, IsNumberPart, Numbers);
            case 8: // a string value replaced by a value of another type
                return ReplaceString(r, b);
            case 9:
                return Insert(b, At(), InvalidUtf8[r.Next(InvalidUtf8.Length)]);
            case 10: // deep nesting where a value starts
            {
                int depth = new[] { 10, 65, 100, 1000, 100_000 }[r.Next(5)];
                bool arrays = r.Next(2) == 0;
                string nested = arrays ? new string('[', depth) + new string(']', depth)
                    : string.Concat(Enumerable.Repeat("{\"a\":", depth)) + "1" + new string('}', depth);
                int colon = IndexAfter(r, b, (byte)':');
                return colon < 0 ? Insert(b, At(), Utf8(nested)) : Replace(b, colon, ValueEnd(b, colon), Utf8(nested));
            }
            case 11: // a byte-order mark, CRLF line ends, or a NUL
                return r.Next(3) switch
                {
                    0 => Insert(b, r.Next(2) == 0 ? 0 : At(), Encoding.UTF8.Preamble.ToArray()),
                    1 => Utf8(Encoding.UTF8.GetString(b).Replace("\n", "\r\n")),
                    _ => Insert(b, At(), [0]),
                };
            case 12: // overwrite a run with one byte
            {
                if (b.Length == 0) return b;
                b = (byte[])b.Clone();
                int start = r.Next(b.Length), length = Math.Min(b.Length - start, 1 + r.Next(64));
                b.AsSpan(start, length).Fill((byte)r.Next(256));
                return b;
            }
            case 13: // splice a copy of one part elsewhere
            {
                if (b.Length == 0) return b;
                int start = r.Next(b.Length), length = Math.Min(b.Length - start, 1 + r.Next(200));
                return Insert(b, At(), b[start..(start + length)]);
            }
            case 14: // a very long line or value
                return Insert(b, At(), Utf8(new string('x', new[] { 1000, 100_000, 2_000_000 }[r.Next(3)])));
            default: // empty, or whitespace only
                return r.Next(2) == 0 ? [] : Utf8(" \n\t\n");
        }
    }

    // Safetensors: half the time the 8-byte header length goes out of range; else the JSON header is mutated and the
    // length kept consistent, so the reader gets past the length check to the header's fields.
    static byte[] MutateSafeTensors(Random r, byte[] file)
    {
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(file);
        switch (r.Next(4))
        {
            case 0:
            {
                var b = (byte[])file.Clone();
                ulong[] lengths = [0, 1, length - 1, length + 1, (ulong)file.Length - 8, (ulong)file.Length, ulong.MaxValue, 1UL << 63, (ulong)r.NextInt64(), 100_000_001, uint.MaxValue];
                BinaryPrimitives.WriteUInt64LittleEndian(b, lengths[r.Next(lengths.Length)]);
                return b;
            }
            case 1:
                return Mutate(r, file);
            default:
            {
                byte[] header = file[8..(8 + (int)length)], data = file[(8 + (int)length)..];
                header = Mutate(r, header);
                if (r.Next(4) == 0) data = data[..r.Next(data.Length + 1)];
                return SafeTensorsBytes(header, data);
            }
        }
    }

    static byte[] Insert(byte[] b, int at, byte[] what) => [.. b.AsSpan(0, at), .. what, .. b.AsSpan(at)];

    static byte[] Replace(byte[] b, int start, int end, byte[] what) => [.. b.AsSpan(0, start), .. what, .. b.AsSpan(end)];

    static List<byte[]> SplitLines(byte[] b)
    {
        var lines = new List<byte[]>();
        int start = 0;
        for (int i = 0; i < b.Length; i++)
            if (b[i] == '\n') { lines.Add(b[start..(i + 1)]); start = i + 1; }
        if (start < b.Length) lines.Add(b[start..]);
        return lines;
    }

    static bool IsNumberStart(byte c) => c is (>= (byte)'0' and <= (byte)'9') or (byte)'-';

    static bool IsNumberPart(byte c) => c is (>= (byte)'0' and <= (byte)'9') or (byte)'-' or (byte)'+' or (byte)'.' or (byte)'e' or (byte)'E';

    static byte[] ReplaceToken(Random r, byte[] b, Func<byte, bool> start, Func<byte, bool> part, string[] replacements)
    {
        var starts = new List<int>();
        for (int i = 0; i < b.Length; i++) if (start(b[i]) && (i == 0 || !part(b[i - 1]))) starts.Add(i);
        if (starts.Count == 0) return MutateOnce(r, b);
        int s = starts[r.Next(starts.Count)], e = s;
        while (e < b.Length && part(b[e])) e++;
        return Replace(b, s, e, Utf8(replacements[r.Next(replacements.Length)]));
    }

    // A "string" after a colon (a value, not a key) replaced by a value of another type.
    static byte[] ReplaceString(Random r, byte[] b)
    {
        int colon = IndexAfter(r, b, (byte)':');
        if (colon < 0) return MutateOnce(r, b);
        return Replace(b, colon, ValueEnd(b, colon), Utf8(WrongValues[r.Next(WrongValues.Length)]));
    }

    // The index just after a randomly chosen occurrence of c (skipping spaces), or -1.
    static int IndexAfter(Random r, byte[] b, byte c)
    {
        var found = new List<int>();
        for (int i = 0; i < b.Length; i++) if (b[i] == c) found.Add(i);
        if (found.Count == 0) return -1;
        int at = found[r.Next(found.Count)] + 1;
        while (at < b.Length && b[at] == ' ') at++;
        return at;
    }

    // Where the JSON value starting at start ends (strings, scalars; containers by bracket depth).
    static int ValueEnd(byte[] b, int start)
    {
        if (start >= b.Length) return start;
        if (b[start] == '"')
        {
            for (int i = start + 1; i < b.Length; i++)
            {
                if (b[i] == '\\') i++;
                else if (b[i] == '"') return i + 1;
            }
            return b.Length;
        }
        int depth = 0;
        for (int i = start; i < b.Length; i++)
        {
            byte c = b[i];
            if (c is (byte)'{' or (byte)'[') depth++;
            else if (c is (byte)'}' or (byte)']') { if (depth == 0) return i; if (--depth == 0) return i + 1; }
            else if (depth == 0 && c is (byte)',' or (byte)'\n') return i;
        }
        return b.Length;
    }
}
