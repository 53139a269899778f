using System.Diagnostics;
using System.Text;
using System.Text.Json;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// Trains an 8,192-token byte-level BPE on 10 MB of text and encodes that text with it on one thread.
/// Beside it, in the same run, Debian's SentencePiece (python3-sentencepiece; run setup.sh once) trains a BPE of the
/// same size on the same file. The text is synthetic but shaped like prose: words drawn with Zipf's
/// law from a lexicon of 200k pronounceable words, capitals, digits, punctuation, and some non-ASCII. Options: --size-mb N (default 10), --vocab N (8192), --dir PATH.
/// </summary>
static class TokenizerBenchmark
{
    public static Task<int> RunAsync(string[] args)
    {
        double sizeMb = BenchmarkArgs.Value(args, "--size-mb") is { } mb ? double.Parse(mb) : 10;
        int vocab = BenchmarkArgs.Value(args, "--vocab") is { } v ? int.Parse(v) : 8192;
        string dir = BenchmarkArgs.TempDir(args);
        Directory.CreateDirectory(dir);
        string path = Path.Combine(dir, $"prose-{sizeMb}MB.txt");
        if (!File.Exists(path)) WriteProse(path, (long)(sizeMb * 1e6));
        long bytes = new FileInfo(path).Length;

        var corpus = new CorpusDataView(new CorpusOptions { Path = path, TextMode = TextDocumentMode.Line });
        var clock = Stopwatch.StartNew();
        var tokenizer = BpeTrainer.Train(corpus, new BpeTrainerOptions
        {
            VocabSize = vocab,
            Progress = new Progress<BpeTrainingProgress>(p => Console.WriteLine($"{p.Phase} {p.Done:N0}/{p.Total:N0} {p.Elapsed.TotalSeconds:F1} s")),
        });
        double trainSeconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"trained {tokenizer.VocabSize} tokens in {trainSeconds:F1} s; encoder: {tokenizer.Inner.GetType().Name}");

        // Encode every line on this thread (the tokenizer never starts others).
        string[] lines = File.ReadAllLines(path);
        tokenizer.Encode(lines[0]); // warm up
        clock.Restart();
        long tokens = 0;
        foreach (string line in lines) tokens += tokenizer.Encode(line).Count;
        double encodeSeconds = clock.Elapsed.TotalSeconds;

        // Reference: Microsoft.ML.Tokenizers' own GPT-2 (50k ranks, its built-in regex) on the same lines.
        var gpt2 = TextTokenizer.Gpt2();
        gpt2.Encode(lines[0]);
        clock.Restart();
        foreach (string line in lines) gpt2.Encode(line);
        double gpt2Seconds = clock.Elapsed.TotalSeconds;

        double? spmSeconds = SentencePieceSeconds(path, dir, vocab);
        var result = new
        {
            benchmark = "tokenizer",
            text_mb = Math.Round(bytes / 1e6, 2),
            vocab_size = tokenizer.VocabSize,
            train_seconds = Math.Round(trainSeconds, 2),
            encode_mb_per_s = Math.Round(bytes / 1e6 / encodeSeconds, 2),
            gpt2_encode_mb_per_s = Math.Round(bytes / 1e6 / gpt2Seconds, 2),
            tokens,
            bytes_per_token = Math.Round((double)bytes / tokens, 2),
            sentencepiece_bpe_train_seconds = spmSeconds is { } s ? Math.Round(s, 2) : (double?)null,
            cores = Environment.ProcessorCount,
        };
        Console.WriteLine(JsonSerializer.Serialize(result));
        return Task.FromResult(0);
    }

    static double? SentencePieceSeconds(string path, string dir, int vocab)
    {
        string script = $"""
            import sentencepiece as spm, time
            t = time.time()
            spm.SentencePieceTrainer.train(input='{path}', model_prefix='{Path.Combine(dir, "spm-bpe")}', vocab_size={vocab},
                model_type='bpe', num_threads={Environment.ProcessorCount}, minloglevel=2)
            print(time.time() - t)
            """;
        try
        {
            var info = new ProcessStartInfo("/usr/bin/python3", ["-c", script]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(info)!;
            string output = process.StandardOutput.ReadToEnd();
            string error = process.StandardError.ReadToEnd();
            process.WaitForExit();
            if (process.ExitCode != 0)
            {
                Console.WriteLine($"sentencepiece reference skipped (run tests/MLNetFinetune.Benchmarks/setup.sh): {error.Trim().Split('\n')[^1]}");
                return null;
            }
            double seconds = double.Parse(output.Trim(), System.Globalization.CultureInfo.InvariantCulture);
            Console.WriteLine($"sentencepiece BPE {vocab}: {seconds:F1} s");
            return seconds;
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            Console.WriteLine($"sentencepiece reference skipped: {e.Message}");
            return null;
        }
    }

    // Lines of 5–40 words from a Zipf-distributed lexicon of syllable words, sentence case and punctuation.
    static void WriteProse(string path, long size)
    {
        string onsets = "bcdfghjklmnprstvwz", vowels = "aeiouyéöå";
        var random = new Random(42);
        var lexicon = new string[200_000];
        for (int i = 0; i < lexicon.Length; i++)
        {
            var w = new StringBuilder();
            int n = 1 + (int)Math.Min(5, -Math.Log(1 - random.NextDouble()) * 1.3);
            for (int k = 0; k < n; k++)
            {
                w.Append(onsets[random.Next(onsets.Length)]).Append(vowels[random.Next(vowels.Length)]);
                if (random.Next(3) == 0) w.Append(onsets[random.Next(onsets.Length)]);
            }
            lexicon[i] = w.ToString();
        }
        // Zipf: P(rank r) ∝ 1/r, sampled through the cumulative weights.
        var cumulative = new double[lexicon.Length];
        double total = 0;
        for (int r = 0; r < lexicon.Length; r++) cumulative[r] = total += 1.0 / (r + 1);
        string punctuation = ".,;:!?";
        DataFiles.WriteAtomically(path, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false), 1 << 16, leaveOpen: true) { NewLine = "\n" };
            long written = 0;
            var line = new StringBuilder();
            while (written < size)
            {
                line.Clear();
                int words = random.Next(5, 40);
                for (int k = 0; k < words; k++)
                {
                    int index = Array.BinarySearch(cumulative, random.NextDouble() * total);
                    string word = lexicon[index < 0 ? ~index : index];
                    if (k == 0) word = char.ToUpperInvariant(word[0]) + word[1..];
                    if (random.Next(50) == 0) word = random.Next(10_000).ToString();
                    line.Append(word);
                    line.Append(k == words - 1 ? "." : random.Next(12) == 0 ? punctuation[random.Next(punctuation.Length)] + " " : " ");
                }
                writer.WriteLine(line);
                written += Encoding.UTF8.GetByteCount(line.ToString()) + 1;
            }
        });
    }
}
