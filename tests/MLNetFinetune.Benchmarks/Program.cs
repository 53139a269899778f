// Benchmarks, one per stage: dotnet run -c Release --project tests/MLNetFinetune.Benchmarks -- <name>
// Each prints progress lines, then one JSON object on its last line. Results and commands: docs/BENCHMARKS.md.
using MLNetFinetune.Benchmarks;

var benchmarks = new Dictionary<string, Func<string[], Task<int>>>
{
    ["data"] = DataBenchmark.RunAsync,
    ["tokenizer"] = TokenizerBenchmark.RunAsync,
    ["train"] = TrainBenchmark.RunAsync,
    ["finetune"] = FinetuneBenchmark.RunAsync,
    ["generate"] = GenerateBenchmark.RunAsync,
    ["decode"] = GenerateBenchmark.DecodeAloneAsync,
    ["load"] = LoadBenchmark.RunAsync,
    ["serve"] = ServeBenchmark.RunAsync,
    ["fuzz"] = FuzzBenchmark.RunAsync,
    ["tokenize"] = TokenizeBenchmark.RunAsync,
};

string? name = args.FirstOrDefault();
if (name == null || !benchmarks.TryGetValue(name, out var run))
{
    Console.Error.WriteLine($"usage: MLNetFinetune.Benchmarks <{string.Join("|", benchmarks.Keys)}> [options]");
    return 2;
}
return await run(args[1..]);
