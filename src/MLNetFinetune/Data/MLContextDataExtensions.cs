using Microsoft.ML.Data;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using Microsoft.ML.Runtime;
using Microsoft.Extensions.AI;
using MLNetFinetune.PairGathering;

namespace MLNetFinetune.Data;

/// <summary>Catalog entry points of the data stage: <c>ml.Data.LoadCorpus(...)</c>, <c>ml.Transforms.Text.ApplyPromptTemplate(...)</c>, …</summary>
public static class MLContextDataExtensions
{
    /// <summary>Streams a pretraining corpus (txt, jsonl, jsonl.gz, jsonl.zst; file, folder or glob). Pass reports go to the ML.NET log.</summary>
    public static CorpusDataView LoadCorpus(this DataOperationsCatalog catalog, CorpusOptions options) =>
        new(options, GetEnvironment(catalog));

    /// <summary>Streams the <c>text</c> field of a JSON Lines corpus, or the documents of text files, into a <c>Text</c> column.</summary>
    public static CorpusDataView LoadCorpus(this DataOperationsCatalog catalog, string path) =>
        catalog.LoadCorpus(new CorpusOptions { Path = path });

    /// <summary>Loads question/answer, Alpaca or prompt/completion pairs from JSONL or CSV. Skips, if allowed, are logged.</summary>
    public static DataFrame LoadInstructionData(this DataOperationsCatalog catalog, string path, InstructionDataOptions? options = null) =>
        InstructionData.Load(path, options, GetEnvironment(catalog));

    /// <summary>
    /// Gathers input/output pairs from a large model (<see cref="PairGatherer.GatherAsync"/>: inputs answered, or pairs
    /// written about documents; deduplicated and filtered; resumable) and returns every pair in the file as text columns
    /// <c>question</c>, <c>answer</c>, <c>source</c>, <c>model</c>, <c>prompt_hash</c>, ready for
    /// <c>ApplyPromptFormat(PromptTemplates.QuestionAnswer)</c> and instruction tuning. The run's report goes to the ML.NET log.
    /// </summary>
    public static DataFrame GeneratePairs(this DataOperationsCatalog catalog, IChatClient chatClient, PairGatheringOptions options) =>
        catalog.GeneratePairs(chatClient, options, out _);

    /// <summary>Like <see cref="GeneratePairs(DataOperationsCatalog, IChatClient, PairGatheringOptions)"/>, handing back the run's report (kept, rejects by reason, retries).</summary>
    public static DataFrame GeneratePairs(this DataOperationsCatalog catalog, IChatClient chatClient, PairGatheringOptions options, out PairGatheringReport report)
    {
        // ML.NET pipelines are synchronous; the run's own awaits must not need the caller's synchronization context.
        var gathered = report = Task.Run(() => PairGatherer.GatherAsync(chatClient, options)).GetAwaiter().GetResult();
        if (GetEnvironment(catalog) is { } log)
        {
            using var channel = log.Start("GeneratePairs");
            channel.Info(MessageSensitivity.None, gathered.ToJson());
        }
        string[] columns = ["question", "answer", "source", "model", "prompt_hash"];
        return gathered.Kept == 0
            ? new DataFrame(columns.Select(c => (DataFrameColumn)new StringDataFrameColumn(c, 0)))
            : InstructionData.LoadJsonl(options.OutputPath!, new InstructionDataOptions { Layout = InstructionLayout.QuestionAnswer, ExtraFields = columns[2..] });
    }

    /// <summary>Writes every visible column of <paramref name="data"/> to a JSON Lines file (atomically; .gz/.zst compress).</summary>
    public static void SaveAsJsonl(this DataOperationsCatalog catalog, IDataView data, string path, JsonlWriteOptions? options = null) =>
        JsonlWriter.Write(data, path, options);

    /// <summary>Renders <paramref name="template"/> over each row into <paramref name="outputColumnName"/>.</summary>
    public static PromptTemplateEstimator ApplyPromptTemplate(this TransformsCatalog.TextTransforms catalog, string outputColumnName, PromptTemplate template) =>
        new(new PromptTemplateOptions { OutputColumnName = outputColumnName, Template = template });

    /// <summary>Renders a template given as text (<c>"### Question:\n{question}\n\n### Answer:"</c>) into <paramref name="outputColumnName"/>.</summary>
    public static PromptTemplateEstimator ApplyPromptTemplate(this TransformsCatalog.TextTransforms catalog, string outputColumnName, string template) =>
        catalog.ApplyPromptTemplate(outputColumnName, new PromptTemplate(template));

    /// <summary>
    /// Renders a prompt format's two parts into <paramref name="promptColumnName"/> (what the model is given) and
    /// <paramref name="responseColumnName"/> (what it learns to answer, with the separator before it).
    /// </summary>
    public static EstimatorChain<PromptTemplateTransformer> ApplyPromptFormat(this TransformsCatalog.TextTransforms catalog, PromptFormat format,
        string promptColumnName = "Prompt", string responseColumnName = "Response") =>
        catalog.ApplyPromptTemplate(promptColumnName, format.Prompt).Append(catalog.ApplyPromptTemplate(responseColumnName, format.Response));

    // A catalog exposes its MLContext's environment (what ML.NET components log through) only via the internal
    // IInternalCatalog interface; without it, loaders still work and report through IProgress alone.
    internal static IChannelProvider? GetEnvironment(object catalog) =>
        catalog.GetType().GetInterfaces().FirstOrDefault(i => i.Name == "IInternalCatalog")
            ?.GetProperty("Environment")?.GetValue(catalog) as IChannelProvider;
}
