using Microsoft.Data.Analysis;
using MLNetFinetune.Data;

namespace MLNetFinetune.ChatTemplates;

/// <summary>
/// Turns conversations into prompt/response pairs rendered by a chat template, one per assistant turn: the prompt is
/// the conversation before the turn with the generation prompt (what the model sees when it answers), the response is
/// what the template adds for the turn (its content and end-of-turn tokens). Instruction tuning then learns the
/// assistant's tokens only, each with its whole context, and chat prompts the model exactly as it was trained.
/// </summary>
public static class ConversationPairs
{
    /// <summary>
    /// Expands the <paramref name="messagesColumn"/> of <paramref name="conversations"/> (JSON lists from
    /// <see cref="InstructionData"/>) into Prompt and Response columns; other text columns are repeated for each pair.
    /// <paramref name="variables"/> are the template's special tokens (<see cref="ChatTemplate.SpecialTokens"/>).
    /// </summary>
    public static DataFrame Expand(DataFrame conversations, ChatTemplate template, IReadOnlyDictionary<string, object?>? variables = null,
        string messagesColumn = "messages", string promptColumnName = "Prompt", string responseColumnName = "Response")
    {
        if (!conversations.Columns.Any(c => c.Name == messagesColumn))
            throw new ArgumentException($"The data has no '{messagesColumn}' column (columns: {string.Join(", ", conversations.Columns.Select(c => c.Name))}).", nameof(conversations));
        var others = conversations.Columns.Where(c => c.Name != messagesColumn && c is StringDataFrameColumn).Cast<StringDataFrameColumn>().ToList();
        var prompts = new List<string>();
        var responses = new List<string>();
        var repeated = others.Select(_ => new List<string?>()).ToArray();
        var messages = (StringDataFrameColumn)conversations[messagesColumn];
        for (long row = 0; row < messages.Length; row++)
        {
            var turns = Conversations.Parse(messages[row]);
            for (int i = 0; i < turns.Count; i++)
            {
                if (turns[i].Role != "assistant") continue;
                string prompt = template.Render(turns.Take(i).ToList(), addGenerationPrompt: true, variables);
                string full = template.Render(turns.Take(i + 1).ToList(), addGenerationPrompt: false, variables);
                if (!full.StartsWith(prompt, StringComparison.Ordinal) || full.Length == prompt.Length)
                    throw new InvalidDataException($"Row {row}: the chat template ({template.Origin}) renders the conversation up to assistant turn {i + 1} " +
                        "so that the text before the turn, with the generation prompt, is not a prefix of it; it cannot be trained on assistant tokens only.");
                prompts.Add(prompt);
                responses.Add(full[prompt.Length..]);
                for (int c = 0; c < others.Count; c++) repeated[c].Add(others[c][row]);
            }
        }
        return new DataFrame([new StringDataFrameColumn(promptColumnName, prompts), new StringDataFrameColumn(responseColumnName, responses),
            .. others.Select((c, i) => (DataFrameColumn)new StringDataFrameColumn(c.Name, repeated[i]))]);
    }

    /// <summary>
    /// Evaluation rows for a model that answers in a chat template: <c>question</c> (what the user asks), <c>answer</c>
    /// (the expected reply), <c>Prompt</c> (the conversation up to the reply, with the generation prompt) and
    /// <c>Response</c> (the reply). Conversations are asked their last assistant turn; pairs of any layout become a
    /// one-message conversation of the prompt field (Alpaca's instruction and input).
    /// </summary>
    public static DataFrame ForEvaluation(DataFrame data, InstructionLayout layout, ChatTemplate template, IReadOnlyDictionary<string, object?>? variables = null)
    {
        var questions = new List<string>();
        var answers = new List<string>();
        var prompts = new List<string>();
        for (long row = 0; row < data.Rows.Count; row++)
        {
            List<ChatTurn> context;
            string answer;
            if (layout == InstructionLayout.Conversation)
            {
                var turns = Conversations.Parse((string)data["messages"][row]);
                int last = turns.Select((t, i) => (t, i)).Last(x => x.t.Role == "assistant").i;
                context = turns.Take(last).ToList();
                answer = turns[last].Content;
            }
            else
            {
                var fields = InstructionData.FieldsOf(layout);
                string user = (string)data[fields[0]][row];
                if (layout == InstructionLayout.Alpaca && data[fields[1]][row] is string input && input.Length > 0) user += "\n\n" + input;
                context = [new ChatTurn("user", user)];
                answer = (string)data[fields[^1]][row];
            }
            questions.Add(context.LastOrDefault(t => t.Role == "user")?.Content ?? "");
            answers.Add(answer);
            prompts.Add(template.Render(context, addGenerationPrompt: true, variables));
        }
        return new DataFrame(new StringDataFrameColumn("question", questions), new StringDataFrameColumn("answer", answers),
            new StringDataFrameColumn("Prompt", prompts), new StringDataFrameColumn("Response", answers));
    }
}
