using MLNetFinetune.ChatTemplates;
using MLNetFinetune.Data;

namespace MLNetFinetune.Tests.ChatTemplates;

/// <summary>
/// Model-style chat templates rendered by ours and by Jinja2 configured as transformers' apply_chat_template: the same
/// bytes for every conversation, with and without the generation prompt (and both failing where the template refuses
/// a conversation).
/// </summary>
public class ModelTemplateParityTests
{
    static List<RenderCase> Cases(string name, string template, IEnumerable<ChatTurn[]> conversations, string variables) =>
        conversations.SelectMany(c => new[] { false, true }.Select(prompt => new RenderCase(template, c, prompt, variables) { Name = name })).ToList();

    [JinjaFact]
    public void ChatMLMatchesJinja() =>
        JinjaReference.AssertSameAsJinja(Cases("chatml", ModelStyleTemplates.ChatML, ModelStyleTemplates.Conversations, "{}"));

    [JinjaFact]
    public void Llama3MatchesJinja() =>
        JinjaReference.AssertSameAsJinja(Cases("llama3", ModelStyleTemplates.Llama3, ModelStyleTemplates.Conversations,
            """{"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}"""));

    [JinjaFact]
    public void ZephyrMatchesJinja() =>
        JinjaReference.AssertSameAsJinja(Cases("zephyr", ModelStyleTemplates.Zephyr,
            [.. ModelStyleTemplates.Conversations, [new("tool", "not a Zephyr role")]], """{"eos_token": "</s>"}"""));

    [JinjaFact]
    public void Llama2MatchesJinjaAndRefusesTurnsOutOfOrder()
    {
        var cases = Cases("llama2", ModelStyleTemplates.Llama2, ModelStyleTemplates.Conversations, """{"bos_token": "<s>", "eos_token": "</s>"}""");
        JinjaReference.AssertSameAsJinja(cases);

        var outOfOrder = JinjaReference.RenderOurs(cases.Single(c => c.Messages is [{ Role: "assistant" }, ..] && !c.AddGenerationPrompt)).Error!;
        Assert.Equal("Conversation roles must alternate user/assistant/user/assistant/...", outOfOrder.Problem);
        var empty = JinjaReference.RenderOurs(cases.First(c => c.Messages.Count == 0)).Error!;
        Assert.Equal("list object has no element 0", empty.Problem);   // messages[0]['role'] on no messages, in Jinja2's words
    }

    [JinjaFact]
    public void ToolTemplateWithNamespaceTojsonAndSlicesMatchesJinja()
    {
        var cases = Cases("tools", ModelStyleTemplates.Tools, ModelStyleTemplates.Conversations, "{}");
        cases.AddRange(Cases("tools", ModelStyleTemplates.Tools, ModelStyleTemplates.ToolConversations, ModelStyleTemplates.ToolSchemas));
        cases.AddRange(Cases("tools", ModelStyleTemplates.Tools, ModelStyleTemplates.ToolConversations,
            ModelStyleTemplates.ToolSchemas.TrimEnd().TrimEnd('}') + ", \"enable_thinking\": false}"));
        JinjaReference.AssertSameAsJinja(cases);
    }

    [JinjaFact]
    public void ThePromptFormatsChatTemplatesRenderAsJinjaDoes()
    {
        var cases = PromptTemplates.BuiltIn.Select(f => (f.Name, Template: PromptFormats.ChatTemplate(f)))
            .Where(f => f.Template != null)
            .SelectMany(f => Cases(f.Name, f.Template!, [[new("user", "What is the capital of Peru?"), new("assistant", "Lima")], [new("user", "Ünï 'q' \"qq\"\n")]],
                """{"eos_token": "<|endoftext|>"}"""))
            .ToList();
        Assert.NotEmpty(cases);
        JinjaReference.AssertSameAsJinja(cases);
    }

    [Fact]
    public void ChatMLRendersTheExpectedTurns()
    {
        var template = ChatTemplate.Parse(ModelStyleTemplates.ChatML);
        string text = template.Render([new("user", "Hi")], addGenerationPrompt: true);
        Assert.Equal("<|im_start|>system\nYou are a concise assistant for questions about ML.NET.<|im_end|>\n" +
                     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", text);
    }
}
