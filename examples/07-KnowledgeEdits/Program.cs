// The course's second use of finetuning: gaining or correcting knowledge. The first lesson's finetuned model (what the
// quickstart writes) answers questions about the bundled facts; here some facts it stored are changed (an "outdated"
// capital or currency) and made-up countries are added, and two ways of teaching them are compared: the edited facts
// as one question each, and the same facts paraphrased and stated in prose, mixed with replayed pairs and corpus text.
// Then the edited model is asked one changed fact in words it never saw.
//
//   dotnet run --project src/MLNetFinetune.Cli -c Release -- quickstart   (once: it writes the model the edits start from)
//   dotnet run --project examples/07-KnowledgeEdits -c Release
using MLNetFinetune.Course;
using MLNetFinetune.Course.Facts;
using MLNetFinetune.Data;
using MLNetFinetune.Generation;
using MLNetFinetune.TorchSharp.Training;

string firstLesson = Path.Combine("runs", "quickstart", "finetune", "model");
if (!File.Exists(Path.Combine(firstLesson, "config.json")))
    throw new DirectoryNotFoundException($"'{firstLesson}' does not exist yet: run `dotnet run --project src/MLNetFinetune.Cli -c Release -- quickstart` first.");
string output = ExamplePaths.Output("07-KnowledgeEdits");

// 1–3. Edits, the two levers, and every model scored on the edited facts, their paraphrases and prose, and untouched facts.
var result = KnowledgeLesson.Run(new KnowledgeLessonOptions
{
    Data = Path.GetDirectoryName(ExamplePaths.Data(Path.Combine("facts", "facts.csv")))!, TunedModel = firstLesson, Output = output,
    Levers = [KnowledgeLever.Plain, KnowledgeLever.ParaphrasedWithReplay], Threads = Environment.ProcessorCount, Device = "auto",
}, Console.Out);

// 4. The edited model, asked in wordings it was not trained on: a changed fact and a new one, by question and in prose.
ExamplePaths.Heading("4. The edited model, in words it was not trained on");
using var edited = CausalLMTransformer.Load(Path.Combine(KnowledgeLesson.RunDirectory(output, result.Best.Lever), "model"));
foreach (var edit in new[] { result.Edits.First(e => e.Changed), result.Edits.First(e => !e.Changed) })
{
    var fact = edit.Fact;
    string question = KnowledgeForms.Testing(fact.Attribute)[1].Replace("{entity}", fact.Entity);
    string[] prompts = [PromptTemplates.QuestionAnswerInline.Prompt.Format(("question", question)), FactTemplates.For(fact.Domain, fact.Attribute).Cloze(fact)];
    Console.WriteLine(edit.Changed ? $"{fact.Entity}'s {fact.Attribute} was {edit.Old}, is now {fact.Value}:" : $"{fact.Entity} (made up), {fact.Attribute} {fact.Value}:");
    foreach (string prompt in prompts)
        Console.WriteLine($"  {prompt.ReplaceLineEndings(" ")} →{edited.Generate(prompt, new GenerationOptions { MaxNewTokens = 8 }).ReplaceLineEndings(" ")}");
}
