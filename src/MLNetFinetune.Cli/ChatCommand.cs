using System.CommandLine;
using Microsoft.Extensions.AI;
using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;

namespace MLNetFinetune.Cli;

/// <summary><c>chat</c>: ask an exported, finetuned model questions one line at a time, answers streamed as they are generated.</summary>
static class ChatCommand
{
    public static Command Create(TextReader input, TextWriter output)
    {
        var folder = new Argument<string>("folder") { Description = "An exported folder (model.onnx, config.json, tokenizer), e.g. runs/quickstart/onnx." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Longest answer.", DefaultValueFactory = _ => 64 };
        var temperature = new Option<double>("--temperature") { Description = "0 is greedy.", DefaultValueFactory = _ => 0 };
        var provider = new Option<string>("--provider") { Description = "auto, cpu or cuda.", DefaultValueFactory = _ => "auto" };
        var threads = new Option<int>("--threads") { Description = "ONNX Runtime CPU threads (0: one per core)." };
        var command = new Command("chat", "Ask a finetuned model questions (question/answer template, ONNX Runtime); an empty line or end of input stops.")
        {
            folder, maxNew, temperature, provider, threads,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            // Each question stands alone: the bundled models were finetuned on single question/answer pairs.
            using IChatClient client = new OnnxChatClient(OnnxCausalLM.Load(result.GetValue(folder)!, result.GetValue(provider)!, result.GetValue(threads)), ownsModel: true);
            var options = new ChatOptions { MaxOutputTokens = result.GetValue(maxNew), Temperature = (float)result.GetValue(temperature) };
            while (true)
            {
                output.Write("> ");
                output.Flush();
                string? question = await input.ReadLineAsync(cancellationToken);
                if (string.IsNullOrWhiteSpace(question)) return 0;
                await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, question)], options, cancellationToken))
                    output.Write(update.Text);
                output.WriteLine();
            }
        });
        return command;
    }
}
