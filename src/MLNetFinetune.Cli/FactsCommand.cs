using System.CommandLine;
using MLNetFinetune.Course.Facts;

namespace MLNetFinetune.Cli;

/// <summary><c>facts</c>: turns a fact table into the knowledge corpus and the split question/answer pairs.</summary>
static class FactsCommand
{
    public static Command Create(TextWriter output)
    {
        var table = new Option<string>("--table") { Description = "The fact table: a domain,entity,attribute,value CSV.", Required = true };
        var outDir = new Option<string>("--out") { Description = "Folder for corpus.jsonl.zst, train.jsonl and heldout.jsonl.", Required = true };
        var rounds = new Option<int>("--rounds") { Description = "Times the corpus states every fact.", DefaultValueFactory = _ => new FactDatasetOptions().CorpusRounds };
        var heldOut = new Option<double>("--heldout-fraction") { Description = "Share of each domain's entities kept out of finetuning.", DefaultValueFactory = _ => new FactDatasetOptions().HeldOutFraction };
        var noMix = new Option<bool>("--no-mixed-questions") { Description = "Leave question/answer blocks out of the corpus (prose only)." };
        var seed = new Option<int>("--seed") { Description = "Seed of the split, the wording and the order.", DefaultValueFactory = _ => 0 };
        var command = new Command("facts", "Generate a knowledge corpus and extraction/recall question pairs (split by entity) from a fact table.")
        {
            table, outDir, rounds, heldOut, noMix, seed,
        };
        command.SetAction(result =>
        {
            var facts = FactTable.Load(result.GetValue(table)!);
            var datasets = new FactDatasets(facts, new FactDatasetOptions
            {
                CorpusRounds = result.GetValue(rounds), HeldOutFraction = result.GetValue(heldOut),
                MixQuestionsIntoCorpus = !result.GetValue(noMix), Seed = result.GetValue(seed),
            });
            var (corpus, train, held) = datasets.WriteTo(result.GetValue(outDir)!);
            output.WriteLine($"{facts.Facts.Count:N0} facts about {facts.Entities.Count:N0} entities: {datasets.Split.Train.Count} for finetuning, {datasets.Split.HeldOut.Count} held out");
            output.WriteLine($"wrote {corpus}, {train}, {held}");
            return 0;
        });
        return command;
    }
}
