// Lessons 2 and 5, "Where finetuning fits in" / "Training": pretraining teaches a model from unlabeled text by
// next-token prediction. A tiny GPT-NeoX (the Pythia architecture) learns from random weights on the bundled text.
//
//   dotnet run --project examples/03-Pretrain -c Release      (about a minute on a laptop CPU)
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Training;

var ml = new MLContext(seed: 0);
string output = ExamplePaths.Output("03-Pretrain");

// 1. Unlabeled text: the Pile-style sample and the product documentation as prose.
ExamplePaths.Heading("1. The pretraining corpus");
var pairs = ml.Data.LoadInstructionData(ExamplePaths.Data("mlnet_finetune_docs.jsonl"));
var documents = ml.Data.LoadCorpus(ExamplePaths.Data("pretraining_sample.jsonl.zst")).GetColumn<ReadOnlyMemory<char>>("Text").Select(t => t.ToString())
    .Concat(pairs["question"].Cast<string>().Zip(pairs["answer"].Cast<string>(), (q, a) => $"{q} {a}"))
    .ToArray();
var corpus = new DataFrame(new StringDataFrameColumn("Text", documents));
Console.WriteLine($"{documents.Length} documents, {documents.Sum(d => d.Length):N0} characters");

// 2. A byte-level BPE tokenizer trained on the same text (the Pythia tokenizer is trained the same way, on the Pile).
ExamplePaths.Heading("2. Tokenizer");
var tokenizer = ml.Data.TrainBpeTokenizer(corpus, new BpeTrainerOptions { VocabSize = 512 });
Console.WriteLine($"{tokenizer.VocabSize} tokens; \"What is pretraining?\" → [{string.Join(", ", tokenizer.Encode("What is pretraining?"))}]");

// 3. Pretraining from random weights: blocks of 64 tokens, AdamW, warmup and cosine decay, a held-out split.
ExamplePaths.Heading("3. Pretraining a tiny GPT-NeoX");
var pretrain = ml.CausalLM().Trainers.Pretrain(new PretrainingOptions
{
    Tokenizer = tokenizer, Preset = "tiny", OutputDirectory = output, BlockSize = 64, MicroBatchSize = 8,
    MaxSteps = 300, LearningRate = 3e-3, MinLearningRate = 3e-4, WarmupSteps = 20, EvalFraction = 0.1, EvalInterval = 100,
    LogInterval = 50, CheckpointInterval = 100, Threads = Environment.ProcessorCount, Device = "auto",
    Progress = new Progress<TrainingProgress>(p => Console.WriteLine(p)),
});
using var model = pretrain.Fit(corpus);
var history = model.Training!.History;
Console.WriteLine($"loss {history[0].Loss:F2} → {history[^1].Loss:F2}; metrics in {Path.Combine(output, "metrics.csv")}");

// 4. What it learned: it continues text the way the corpus does — it knows things, but it does not answer.
ExamplePaths.Heading("4. Continuations");
foreach (string prompt in new[] { "Ottawa is the capital of", "What is MLNetFinetune?", "### Question:\nWhat is pretraining?\n\n### Answer:" })
    Console.WriteLine($"{prompt.ReplaceLineEndings(" ")} →{model.Generate(prompt, 20).ReplaceLineEndings(" ")}");
Console.WriteLine($"\nmodel saved in {Path.Combine(output, "model")} (config.json, model.safetensors, tokenizer: the Hugging Face layout)");
