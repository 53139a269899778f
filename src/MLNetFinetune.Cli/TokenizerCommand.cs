using System.CommandLine;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Cli;

/// <summary><c>mlnet-finetune tokenizer train</c>: a byte-level BPE tokenizer from a corpus, saved in Hugging Face files.</summary>
static class TokenizerCommand
{
    public static Command Create(TextWriter output)
    {
        var corpus = new Option<string>("--corpus") { Description = "Training text: .txt/.jsonl[.gz|.zst] file, folder or glob.", Required = true };
        var text = new CorpusTextOptions();
        var vocabSize = new Option<int>("--vocab-size") { Description = "Total vocabulary size (special tokens + 256 bytes + merges).", DefaultValueFactory = _ => 8192 };
        var minFrequency = new Option<int>("--min-frequency") { Description = "Stop when the best pair occurs fewer times.", DefaultValueFactory = _ => 2 };
        var special = new Option<string[]>("--special") { Description = "Special tokens, first ids in order.", DefaultValueFactory = _ => [TextTokenizer.EndOfText, TextTokenizer.Padding], AllowMultipleArgumentsPerToken = true };
        var outDir = new Option<string>("--out") { Description = "Folder for vocab.json, merges.txt and tokenizer.json.", Required = true };
        var train = new Command("train", "Train a byte-level BPE tokenizer (GPT-2 style) and save it in Hugging Face format.")
        {
            corpus, vocabSize, minFrequency, special, outDir,
        };
        foreach (var o in text.All) train.Options.Add(o);
        train.SetAction(result =>
        {
            var ml = new MLContext(seed: 0);
            var data = ml.Data.LoadCorpus(text.For(result, result.GetValue(corpus)!));
            var tokenizer = BpeTrainer.Train(data, new BpeTrainerOptions
            {
                VocabSize = result.GetValue(vocabSize),
                MinPairFrequency = result.GetValue(minFrequency),
                SpecialTokens = result.GetValue(special)!,
                Progress = new LineProgress(output),
            });
            string dir = result.GetValue(outDir)!;
            tokenizer.Save(dir);
            output.WriteLine($"{tokenizer.VocabSize:N0} tokens ({tokenizer.Vocabulary!.Merges.Count:N0} merges) written to {dir}");
            return 0;
        });
        return new Command("tokenizer", "Train tokenizers.") { train };
    }

    /// <summary>Progress as plain lines, once per phase step (the merge loop reports every 500 merges).</summary>
    sealed class LineProgress(TextWriter output) : IProgress<BpeTrainingProgress>
    {
        public void Report(BpeTrainingProgress p) =>
            output.WriteLine(p.Phase == "counting" ? $"counting: {p.Done:N0} documents, {p.Elapsed.TotalSeconds:F1} s" : $"merging: {p.Done:N0}/{p.Total:N0}, {p.Elapsed.TotalSeconds:F1} s");
    }
}
