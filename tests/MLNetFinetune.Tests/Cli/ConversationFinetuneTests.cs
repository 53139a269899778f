using System.Text.Json;
using Microsoft.Data.Analysis;
using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tests.ChatTemplates;
using MLNetFinetune.Tokenization;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Tests.Cli;

/// <summary>
/// Conversations (TRL's <c>messages</c> format) on a tiny Llama-layout model with a ChatML template: loaded like the
/// other layouts, rendered one pair per assistant turn, trained on the assistant's tokens only, and the finetuned
/// folder (and its ONNX export) keeps the template, which <c>chat</c> then uses.
/// </summary>
[Collection(TorchCollection.Name)]
public class ConversationFinetuneTests : IDisposable
{
    readonly TempDirectory _dir = new();

    public void Dispose() => _dir.Dispose();

    static readonly (string Country, string Capital)[] Facts =
        [("Peru", "Lima"), ("Chile", "Santiago"), ("France", "Paris"), ("Japan", "Tokyo"), ("Kenya", "Nairobi"), ("Spain", "Madrid")];

    static string Conversation(params (string Role, string Content)[] turns) =>
        JsonSerializer.Serialize(new { messages = turns.Select(t => new { role = t.Role, content = t.Content }) });

    string ConversationsFile()
    {
        var lines = Facts.Select(f => Conversation(("user", $"What is the capital of {f.Country}?"), ("assistant", f.Capital))).ToList();
        // Two turns: the second answer is learnt with the first exchange as its context.
        lines.Add(Conversation(("system", "Answer with one word."), ("user", "What is the capital of Peru?"), ("assistant", "Lima"),
            ("user", "What is the capital of Japan?"), ("assistant", "Tokyo")));
        return _dir.File("conversations.jsonl", string.Join("\n", lines) + "\n");
    }

    [Fact]
    public void ConversationsLoadAndExpandToOnePairPerAssistantTurn()
    {
        var frame = InstructionData.Load(ConversationsFile());
        Assert.Equal(["messages"], frame.Columns.Select(c => c.Name));
        var pairs = ConversationPairs.Expand(frame, ChatTemplate.Parse(ModelStyleTemplates.ChatML, "ChatML"));
        Assert.Equal(Facts.Length + 2, pairs.Rows.Count);
        Assert.Equal("<|im_start|>system\nYou are a concise assistant for questions about ML.NET.<|im_end|>\n<|im_start|>user\nWhat is the capital of Peru?<|im_end|>\n<|im_start|>assistant\n",
            (string)pairs["Prompt"][0]);
        Assert.Equal("Lima<|im_end|>\n", (string)pairs["Response"][0]);
        // The last pair is the second turn of the two-turn conversation: its prompt holds the first exchange.
        Assert.EndsWith("<|im_start|>assistant\nLima<|im_end|>\n<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n", (string)pairs["Prompt"][pairs.Rows.Count - 1]);
        Assert.Equal("Tokyo<|im_end|>\n", (string)pairs["Response"][pairs.Rows.Count - 1]);
    }

    [Fact]
    public void BadConversationsNameTheLineAndTheItem()
    {
        foreach (var (record, problem) in new[]
        {
            ("""{"messages": [{"role": "user", "content": "hi"}]}""", "field 'messages' has no assistant turn to learn from"),
            ("""{"messages": [{"role": "user"}, {"role": "assistant", "content": "x"}]}""", "field 'messages' item 1 has no text \"content\""),
            ("""{"messages": ["hi"]}""", "field 'messages' item 1 is not an object with \"role\" and \"content\""),
            ("""{"messages": "hi"}""", "field 'messages' must be a list of {\"role\", \"content\"} objects"),
        })
        {
            string path = _dir.File("bad.jsonl", Conversation(("user", "q"), ("assistant", "a")) + "\n" + record + "\n");
            Assert.Equal($"{path}:2: {problem}", Assert.Throws<DataFileException>(() => InstructionData.Load(path)).Message);
        }
    }

    [Fact]
    public void ATemplateWhosePromptIsNotAPrefixOfTheConversationIsRefused()
    {
        // The generation prompt ">>" is not in the rendered conversation, so the assistant's tokens cannot be cut out of it.
        var template = ChatTemplate.Parse("{% for m in messages %}{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}>>{% endif %}", "odd");
        var e = Assert.Throws<InvalidDataException>(() => ConversationPairs.Expand(InstructionData.Load(ConversationsFile()), template));
        Assert.StartsWith("Row 0: the chat template (odd) renders the conversation up to assistant turn 2 so that the text before the turn", e.Message);
    }

    [Fact]
    public void FinetuningConversationsOnABaseWithoutAChatTemplateSaysHowToGiveOne()
    {
        string baseDir = RepoPaths.Of("models", "facts-base"); // a base model: no chat template
        var (code, _, error) = CliRunner.Run("finetune", "--pairs", ConversationsFile(), "--base", baseDir, "--out", Path.Combine(_dir.Path, "none"),
            "--steps", "1", "--threads", "1", "--device", "cpu");
        Assert.Equal(1, code);
        Assert.Contains($"The data holds conversations (messages) but base model '{baseDir}' has no chat template; give one with --chat-template FILE.", error);
        Assert.False(Directory.Exists(Path.Combine(_dir.Path, "none")));
    }

    string BaseModel()
    {
        string dir = Path.Combine(_dir.Path, "base");
        var tokenizer = BpeTrainer.Train(new DataFrame(new StringDataFrameColumn("Text",
            [string.Join(" ", Facts.Select(f => $"What is the capital of {f.Country}? {f.Capital}.")), "Answer with one word. You are a concise assistant for questions about ML.NET."])),
            new BpeTrainerOptions { VocabSize = 300, SpecialTokens = [TextTokenizer.EndOfText, TextTokenizer.Padding, "<|im_start|>", "<|im_end|>"] });
        manual_seed(0);
        using var model = new TransformerForCausalLM(ModelConfig.Preset("tiny-llama", 320));
        HfCheckpoint.Save(model, tokenizer, dir);
        ChatTemplate.Parse(ModelStyleTemplates.ChatML).Save(dir, new Dictionary<string, object?> { ["eos_token"] = "<|im_end|>" });
        return dir;
    }

    static string Run(string input, params string[] args) => CliRunner.Succeeds(input, args);

    [Theory]
    [InlineData(0)]
    [InlineData(16)]
    public void FinetuneExportAndChatKeepTheChatTemplate(int loraRank)
    {
        string baseDir = BaseModel(), run = Path.Combine(_dir.Path, $"tuned-{loraRank}");
        string log = Run("", "finetune", "--pairs", ConversationsFile(), "--base", baseDir, "--out", run, "--steps", loraRank > 0 ? "200" : "100", "--lr", loraRank > 0 ? "1e-2" : "3e-3",
            "--lora-rank", loraRank.ToString(), "--threads", "1", "--device", "cpu", "--block-size", "128", "--batch-size", "4", "--eval-fraction", "0");
        Assert.Contains("chat template:", log);
        string model = Path.Combine(run, "model");
        Assert.Equal(ModelStyleTemplates.ChatML, ChatTemplate.Load(model)!.Source);
        Assert.False(File.Exists(Path.Combine(model, PromptFormats.FormatFile)));

        // evaluate asks each conversation's last assistant turn in the template, as chat does.
        string evaluation = Run("", "evaluate", "--pairs", ConversationsFile(), "--model", model, "--max-new-tokens", "8");
        Assert.Contains("chat template:", evaluation);
        // Measured: 5/7 full, 6/7 LoRA (the two-turn conversation's second answer is the hard one); the floor is 5.
        var exact = System.Text.RegularExpressions.Regex.Match(evaluation, @"exact match [0-9.]+% \((\d+)/7");
        Assert.True(exact.Success && int.Parse(exact.Groups[1].Value) >= 5, evaluation);

        Run("", "export", model, "--out", Path.Combine(run, "onnx"));
        Assert.Equal(ModelStyleTemplates.ChatML, ChatTemplate.Load(Path.Combine(run, "onnx"))!.Source);

        // Each question in a chat of its own: the answers the conversations taught.
        string onnx = Path.Combine(run, "onnx");
        var answers = Facts.Select(f => Run($"What is the capital of {f.Country}?\n\n", "chat", onnx, "--max-new-tokens", "8", "--provider", "cpu", "--threads", "1").Split('\n')[0]).ToList();
        Assert.True(answers.Count(a => Facts.Any(f => a == "> " + f.Capital)) >= 6, string.Join(" | ", answers));
    }
}
