// Lesson 4, "Data preparation": turn question/answer pairs into what a causal language model trains on.
//
//   dotnet run --project examples/02-PrepareData [-- <pairs.jsonl> <output folder>]
//
// Tokenize (a GPT-2-family byte-level BPE, as Pythia uses), truncate, pad (pad token = end of text), build
// labels with the prompt masked out of the loss, split train/test, and save both splits as JSON Lines.
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

string pairsPath = args.ElementAtOrDefault(0) ?? ExamplePaths.Data("mlnet_finetune_docs.jsonl");
string outputDir = args.ElementAtOrDefault(1) ?? ExamplePaths.Output("02-PrepareData");
var ml = new MLContext(seed: 0);
var tokenizer = TextTokenizer.Gpt2(); // offline; a Pythia folder's tokenizer loads with TextTokenizer.Load(dir)

// 1. Tokenize one text and decode it back: byte-level BPE loses nothing.
ExamplePaths.Heading("1. Tokenize and decode");
string sample = "Hi, how are you? Zürich 東京 🚆";
var ids = tokenizer.Encode(sample);
Console.WriteLine($"{sample}\n→ {string.Join(", ", ids)}\n→ {tokenizer.Decode(ids)}");

// 2. The pairs as prompt (question in the template, up to "### Answer:") and response (the answer after it).
ExamplePaths.Heading("2. Prompt and response");
var pairs = ml.Data.LoadInstructionData(pairsPath);
var render = ml.Transforms.Text.ApplyPromptTemplate("Prompt", PromptTemplates.QuestionAnswer.Prompt)
    .Append(ml.Transforms.Text.ApplyPromptTemplate("Response", "\n{answer}"));
IDataView texts = render.Fit(pairs).Transform(pairs);
Console.WriteLine(texts.GetColumn<ReadOnlyMemory<char>>("Prompt").First() + "" + texts.GetColumn<ReadOnlyMemory<char>>("Response").First());

// 3. Ids and labels. Masking the prompt (-100) trains only on answers; the course's lab trains on the whole text.
ExamplePaths.Heading("3. Ids and labels (prompt masked) for the first pair");
var tokenize = ml.Transforms.Text.TokenizePromptResponse(new TokenizePairsOptions { Tokenizer = tokenizer, MaxLength = 64 });
IDataView examples = tokenize.Fit(texts).Transform(texts);
var first = examples.GetColumn<VBuffer<int>>("InputIds").First().DenseValues().ToArray();
var firstLabels = examples.GetColumn<VBuffer<int>>("Labels").First().DenseValues().ToArray();
Console.WriteLine($"input ids ({first.Length}): {string.Join(" ", first)}");
Console.WriteLine($"labels    ({firstLabels.Length}): {string.Join(" ", firstLabels)}");
var lengths = examples.GetColumn<VBuffer<int>>("InputIds").Select(v => v.Length).ToArray();
Console.WriteLine($"lengths: min {lengths.Min()}, mean {lengths.Average():F1}, max {lengths.Max()} (max_length 64: long prompts lose their start)");

// 4. Padding happens per batch, to its longest row, with the attention mask marking padding.
ExamplePaths.Heading("4. A padded batch of three");
var three = examples.GetColumn<VBuffer<int>>("InputIds").Take(3).Select(v => (IReadOnlyList<int>)v.DenseValues().ToArray()).ToList();
var batch = TokenBatch.Pad(three, tokenizer.PadId!.Value);
for (int r = 0; r < batch.Rows; r++)
    Console.WriteLine($"row {r}: …{string.Join(" ", batch.Row(r)[^8..].ToArray())}  mask …{string.Join("", batch.AttentionMask.AsSpan(r * batch.Length, batch.Length)[^8..].ToArray())}");

// 5. Split train/test and save both.
ExamplePaths.Heading("5. Train/test split");
var split = ml.Data.TrainTestSplit(examples, testFraction: 0.1, seed: 0);
var columns = new JsonlWriteOptions { Columns = ["question", "answer", "InputIds", "Labels"] };
long train = JsonlWriter.Write(split.TrainSet, Path.Combine(outputDir, "train.jsonl"), columns);
long test = JsonlWriter.Write(split.TestSet, Path.Combine(outputDir, "test.jsonl"), columns);
Console.WriteLine($"wrote {train} training and {test} test examples to {outputDir}");
