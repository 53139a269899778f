using Microsoft.ML;
using Microsoft.ML.Runtime;

namespace MLNetFinetune.TorchSharp.Training;

/// <summary>The causal-LM catalog: <c>ml.CausalLM().Trainers.Pretrain(...)</c>.</summary>
public sealed class CausalLMCatalog
{
    internal CausalLMCatalog(MLContext context) => Trainers = new CausalLMTrainers(context);

    /// <summary>Trainers of causal language models.</summary>
    public CausalLMTrainers Trainers { get; }

    /// <summary>Exact match (with an interval), token F1, loss and perplexity of generated answers against <paramref name="labelColumn"/>.</summary>
    public MLNetFinetune.Evaluation.GenerationMetrics Evaluate(IDataView scored, string labelColumn, string generatedColumn = "Generated",
        string? lossColumn = "Loss", MLNetFinetune.Evaluation.AnswerNormalization? normalization = null) =>
        MLNetFinetune.Evaluation.GenerationEvaluator.Evaluate(scored, labelColumn, generatedColumn, lossColumn, normalization);
}

/// <summary>The causal-LM trainers.</summary>
public sealed class CausalLMTrainers
{
    readonly MLContext _context;

    internal CausalLMTrainers(MLContext context) => _context = context;

    /// <summary>Pretrains a GPT-NeoX model from random weights on a text (or token-ids) column.</summary>
    public PretrainingEstimator Pretrain(PretrainingOptions options) => new(options, _context);

    /// <summary>Instruction-finetunes a base model directory on prompt/response pairs.</summary>
    public InstructionTuningEstimator InstructionTune(InstructionTuningOptions options) => new(options, _context);
}

/// <summary>Entry point: <c>ml.CausalLM()</c>.</summary>
public static class MLContextCausalLMExtensions
{
    /// <summary>The causal-LM catalog of this context (its log receives training progress).</summary>
    public static CausalLMCatalog CausalLM(this MLContext context) => new(context);
}
