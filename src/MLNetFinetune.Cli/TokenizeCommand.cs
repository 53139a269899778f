using System.CommandLine;
using Microsoft.ML;
using MLNetFinetune.Data;
using MLNetFinetune.Distributed;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TokenShards;

namespace MLNetFinetune.Cli;

/// <summary>
/// <c>mlnet-finetune tokenize</c>: a corpus into Megatron <c>.bin</c>/<c>.idx</c> shards, one per input file. Under
/// mpirun, srun or torchrun each rank takes its share of the files; rank 0 then writes the manifest.
/// </summary>
static class TokenizeCommand
{
    public static Command Create(TextWriter output)
    {
        var corpus = new Option<string>("--corpus") { Description = "Input text: .txt/.jsonl[.gz|.zst] file, folder or glob; one shard per file.", Required = true };
        var tokenizer = new Option<string>("--tokenizer") { Description = "A tokenizer folder (tokenizer.json, tokenizer.model, or vocab.json + merges.txt).", Required = true };
        var outDir = new Option<string>("--out") { Description = "Folder for the shards, their sidecars and manifest.json.", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "Token type: auto (uint16 below 65,500 tokens, else int32), uint16 or int32.", DefaultValueFactory = _ => "auto" }
            .AcceptOnlyFromAmong("auto", "uint16", "int32");
        var text = new CorpusTextOptions();
        var threads = new Option<int>("--threads") { Description = "Threads encoding this process's shards (0: all cores).", DefaultValueFactory = _ => 0 };
        var wait = new Option<double>("--manifest-wait") { Description = "With several ranks: minutes rank 0 waits for the others' shards before failing.", DefaultValueFactory = _ => 360 };
        var command = new Command("tokenize", "Tokenize a corpus into Megatron-LM indexed-dataset shards (.bin/.idx), resumably; ranks from mpirun/srun/torchrun split the files.")
        {
            corpus, tokenizer, outDir, dtype, threads, wait,
        };
        foreach (var o in text.All) command.Options.Add(o);
        command.SetAction(result =>
        {
            string folder = result.GetValue(outDir)!;
            var ml = new MLContext(seed: 0);
            var report = ml.Data.WriteTokenShards(new TokenShardOptions
            {
                Corpus = text.For(result, result.GetValue(corpus)!),
                Tokenizer = TextTokenizer.Load(result.GetValue(tokenizer)!),
                OutputDirectory = folder,
                DType = TokenDTypes.Parse(result.GetValue(dtype)!),
                Rank = LaunchEnvironment.Rank,
                WorldSize = LaunchEnvironment.WorldSize,
                Threads = result.GetValue(threads),
                Progress = new ProgressDisplay.Lines<TokenShardProgress>(output),
            });
            string rank = LaunchEnvironment.WorldSize > 1 ? $"rank {LaunchEnvironment.Rank}/{LaunchEnvironment.WorldSize} ({LaunchEnvironment.Launcher}): " : "";
            output.WriteLine($"{rank}{report}");
            if (LaunchEnvironment.Rank != 0) return 0;
            var manifest = LaunchEnvironment.WorldSize == 1
                ? TokenShardManifest.Write(folder, report.Inputs)
                : TokenShardManifest.WaitAndWrite(folder, report.Inputs, TimeSpan.FromMinutes(result.GetValue(wait)));
            output.WriteLine($"manifest: {manifest.Shards.Count} shards, {manifest.Documents:N0} documents, {manifest.Tokens:N0} {manifest.DType} tokens → {Path.Combine(folder, TokenShardManifest.FileName)}");
            return 0;
        });
        return command;
    }
}
