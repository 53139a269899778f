// Lesson 2, "Where finetuning fits in": look at pretraining data next to finetuning data.
//
//   dotnet run --project examples/01-ExploreData [-- <corpus> <pairs.jsonl> <output.jsonl>]
//
// Pretraining data is unlabeled, huge and noisy text; finetuning data is a small set of structured pairs.
// This program streams a few documents of a Pile-style corpus, loads question/answer pairs into a DataFrame,
// renders them with the question/answer prompt template (training form and prompt form) and writes the
// processed pairs as JSON Lines, ready for tokenization.
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;

string corpusPath = args.ElementAtOrDefault(0) ?? ExamplePaths.Data("pretraining_sample.jsonl.zst");
string pairsPath = args.ElementAtOrDefault(1) ?? ExamplePaths.Data("mlnet_finetune_docs.jsonl");
string outputPath = args.ElementAtOrDefault(2) ?? Path.Combine(ExamplePaths.Output("01-ExploreData"), "mlnet_finetune_docs.processed.jsonl");

var ml = new MLContext(seed: 0);

// 1. Pretraining data: stream the first documents. Nothing is loaded beyond the current document,
//    so the same code reads a 400 GB Pile shard.
ExamplePaths.Heading("1. Pretraining data (first 5 documents)");
var corpus = ml.Data.LoadCorpus(new CorpusOptions { Path = corpusPath, MetadataFields = ["source=meta.pile_set_name"] });
using (var cursor = corpus.GetRowCursor(corpus.Schema))
{
    var text = cursor.GetGetter<ReadOnlyMemory<char>>(corpus.Schema["Text"]);
    var source = cursor.GetGetter<ReadOnlyMemory<char>>(corpus.Schema["source"]);
    ReadOnlyMemory<char> t = default, s = default;
    for (int i = 0; i < 5 && cursor.MoveNext(); i++)
    {
        text(ref t);
        source(ref s);
        Console.WriteLine($"[{s}] {Shorten(t.ToString(), 110)}");
    }
}
long documents = corpus.GetColumn<ReadOnlyMemory<char>>("Text").LongCount();
Console.WriteLine($"… {documents} documents in {corpus.Files.Count} file(s): unlabeled text from mixed sources, noise included.");

// 2. Finetuning data: question/answer pairs, the layout detected from the field names.
ExamplePaths.Heading("2. Finetuning data (first 3 pairs)");
DataFrame pairs = ml.Data.LoadInstructionData(pairsPath);
for (int i = 0; i < 3; i++)
    Console.WriteLine($"question: {pairs["question"][i]}\nanswer:   {Shorten((string)pairs["answer"][i], 100)}\n");
Console.WriteLine($"{pairs.Rows.Count} pairs with columns {string.Join(", ", pairs.Columns.Select(c => c.Name))}: structured, small, curated.");

// 3. The simplest way to train on pairs: join question and answer as plain text.
ExamplePaths.Heading("3. Question and answer joined as plain text");
Console.WriteLine($"{pairs["question"][0]} {pairs["answer"][0]}");

// 4. Better: a template that marks where the question ends and the answer begins.
//    The training form holds the answer; the prompt form stops where the model should continue.
ExamplePaths.Heading("4. The question/answer template, training form and prompt form");
var pipeline = ml.Transforms.Text.ApplyPromptTemplate("text", PromptTemplates.QuestionAnswer.Training)
    .Append(ml.Transforms.Text.ApplyPromptTemplate("prompt", PromptTemplates.QuestionAnswer.Prompt));
IDataView processed = pipeline.Fit(pairs).Transform(pairs);
var rendered = processed.GetColumn<ReadOnlyMemory<char>>("text").First().ToString();
var prompt = processed.GetColumn<ReadOnlyMemory<char>>("prompt").First().ToString();
Console.WriteLine("training form:\n" + rendered + "\n");
Console.WriteLine("prompt form:\n" + prompt);

// 5. Save the processed pairs as JSON Lines (written to a temporary file, then renamed).
ExamplePaths.Heading("5. Processed dataset");
ml.Data.SaveAsJsonl(processed, outputPath, new JsonlWriteOptions { Columns = ["question", "answer", "text", "prompt"] });
Console.WriteLine($"wrote {pairs.Rows.Count} rows to {outputPath}");

static string Shorten(string text, int max)
{
    string oneLine = text.ReplaceLineEndings(" ⏎ ");
    return oneLine.Length <= max ? oneLine : oneLine[..max] + "…";
}
