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
        var command = new Command("chat", "Chat with an exported model (ONNX Runtime) in the chat template or prompt format its folder records; an empty line or end of input stops.")
        {
            folder, maxNew, temperature, provider, threads,
        };
        command.SetAction(async (result, cancellationToken) =>
        {
            using var client = new OnnxChatClient(OnnxCausalLM.Load(result.GetValue(folder)!, result.GetValue(provider)!, result.GetValue(threads)), ownsModel: true);
            var options = new ChatOptions { MaxOutputTokens = result.GetValue(maxNew), Temperature = (float)result.GetValue(temperature) };
            // A model with a chat template was trained on conversations and sees the whole one; otherwise each question
            // stands alone (models finetuned on single question/answer pairs).
            var history = new List<ChatMessage>();
            while (true)
            {
                output.Write("> ");
                output.Flush();
                string? question = await input.ReadLineAsync(cancellationToken);
                if (string.IsNullOrWhiteSpace(question)) return 0;
                if (client.ChatTemplate == null) history.Clear();
                history.Add(new ChatMessage(ChatRole.User, question));
                var answer = new System.Text.StringBuilder();
                await foreach (var update in client.GetStreamingResponseAsync(history, options, cancellationToken))
                {
                    output.Write(update.Text);
                    answer.Append(update.Text);
                }
                history.Add(new ChatMessage(ChatRole.Assistant, answer.ToString()));
                output.WriteLine();
            }
        });
        return command;
    }
}
