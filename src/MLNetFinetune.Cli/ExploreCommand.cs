using System.CommandLine;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;

namespace MLNetFinetune.Cli;

/// <summary><c>mlnet-finetune explore</c>: the first documents of a corpus, the first pairs of an instruction set, both template forms.</summary>
static class ExploreCommand
{
    public static Command Create(TextWriter output)
    {
        var corpus = new Option<string?>("--corpus") { Description = "Pretraining corpus: .txt/.jsonl[.gz|.zst] file, folder or glob." };
        var textField = new Option<string>("--text-field") { Description = "JSON field holding the text.", DefaultValueFactory = _ => "text" };
        var meta = new Option<string[]>("--meta") { Description = "Metadata fields to show, by dotted path (e.g. meta.pile_set_name).", AllowMultipleArgumentsPerToken = true };
        var pairs = new Option<string?>("--pairs") { Description = "Instruction data: .jsonl or .csv of question/answer, Alpaca or prompt/completion pairs." };
        var count = new Option<int>("-n", "--count") { Description = "How many documents and pairs to show.", DefaultValueFactory = _ => 3 };
        var fieldMap = FieldMapOption.Create();
        var outPath = new Option<string?>("--out") { Description = "Write the pairs with their rendered 'text' and 'prompt' columns to this JSONL file." };
        var command = new Command("explore", "Show pretraining documents next to instruction pairs and their prompt templates.")
        {
            corpus, textField, meta, pairs, count, outPath, fieldMap,
        };
        command.SetAction(result =>
        {
            string? corpusPath = result.GetValue(corpus), pairsPath = result.GetValue(pairs);
            if (corpusPath == null && pairsPath == null) throw new ArgumentException("Give --corpus, --pairs or both.");
            int n = result.GetValue(count);
            var ml = new MLContext(seed: 0);
            if (corpusPath != null)
                ShowCorpus(ml, new CorpusOptions { Path = corpusPath, TextField = result.GetValue(textField)!, MetadataFields = result.GetValue(meta) ?? [] }, n, output);
            if (pairsPath != null)
                ShowPairs(ml, pairsPath, FieldMapOption.Options(result, fieldMap), n, result.GetValue(outPath), output);
            return 0;
        });
        return command;
    }

    static void ShowCorpus(MLContext ml, CorpusOptions options, int n, TextWriter output)
    {
        var view = ml.Data.LoadCorpus(options);
        output.WriteLine($"corpus: {view.Files.Count} file(s) from {options.Path}");
        using (var cursor = view.GetRowCursor(view.Schema))
        {
            var getters = view.Schema.Select(c => cursor.GetGetter<ReadOnlyMemory<char>>(c)).ToArray();
            ReadOnlyMemory<char> value = default;
            for (int i = 0; i < n && cursor.MoveNext(); i++)
            {
                var fields = getters.Select((g, c) => { g(ref value); return c == 0 ? Shorten(value.ToString(), 100) : $"{view.Schema[c].Name}={value}"; });
                output.WriteLine($"  [{i}] {string.Join("  ", fields.Skip(1).Append(fields.First()))}");
            }
        }
        output.WriteLine();
    }

    static void ShowPairs(MLContext ml, string path, InstructionDataOptions options, int n, string? outPath, TextWriter output)
    {
        var pairs = ml.Data.LoadInstructionData(path, options);
        var layout = InstructionData.DetectLayout(pairs.Columns.Select(c => c.Name))!.Value;
        var format = InstructionData.TemplateFor(layout);
        output.WriteLine($"pairs: {pairs.Rows.Count} rows, layout {layout} ({string.Join(", ", pairs.Columns.Select(c => c.Name))})");
        var rendered = ml.Transforms.Text.ApplyPromptTemplate("text", format.Training)
            .Append(ml.Transforms.Text.ApplyPromptTemplate("prompt", format.Prompt))
            .Fit(pairs).Transform(pairs);
        var texts = rendered.GetColumn<ReadOnlyMemory<char>>("text").Take(n).ToList();
        for (int i = 0; i < texts.Count; i++)
            output.WriteLine($"  [{i}] {texts[i].ToString().ReplaceLineEndings("\n      ")}\n");
        if (outPath != null)
        {
            long rows = JsonlWriter.Write(rendered, outPath);
            output.WriteLine($"wrote {rows} rows to {outPath}");
        }
    }

    static string Shorten(string text, int max)
    {
        string oneLine = text.ReplaceLineEndings(" ⏎ ");
        return oneLine.Length <= max ? oneLine : oneLine[..max] + "…";
    }
}
