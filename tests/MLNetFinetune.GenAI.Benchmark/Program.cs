// ONNX Runtime GenAI's greedy decoding on an exported folder: `-- FOLDER NEW_TOKENS ID ID …` (the prompt's token ids).
// Prints one JSON object: tokens/s over the new tokens (end of text is suppressed by min_length, so every run makes
// exactly NEW_TOKENS tokens). Run by the generate benchmark as a child process, on the folder it exported.
using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML.OnnxRuntimeGenAI;

if (args.Length < 3)
{
    Console.Error.WriteLine("usage: MLNetFinetune.GenAI.Benchmark FOLDER NEW_TOKENS PROMPT_ID [PROMPT_ID …]");
    return 2;
}
string folder = args[0];
int newTokens = int.Parse(args[1]);
int[] prompt = args[2..].Select(int.Parse).ToArray();
using var config = new Config(folder);
using var model = new Model(config);

double Run()
{
    using var parameters = new GeneratorParams(model);
    parameters.SetSearchOption("max_length", prompt.Length + newTokens);
    parameters.SetSearchOption("min_length", prompt.Length + newTokens);
    parameters.SetSearchOption("do_sample", false);
    using var generator = new Generator(model, parameters);
    generator.AppendTokens(prompt);
    // Like the generate benchmark, time only the steps that each make one new token after the prefill.
    generator.GenerateNextToken();
    var clock = Stopwatch.StartNew();
    int made = 0;
    while (!generator.IsDone()) { generator.GenerateNextToken(); made++; }
    return made / clock.Elapsed.TotalSeconds;
}

Run(); // warm-up
double tokensPerSecond = Run();
Console.WriteLine(JsonSerializer.Serialize(new { genai_tokens_per_s = Math.Round(tokensPerSecond, 1), new_tokens = newTokens }));
return 0;
