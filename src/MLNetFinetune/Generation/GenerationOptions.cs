namespace MLNetFinetune.Generation;

/// <summary>How text is generated: greedy by default; sampling with temperature, top-k and top-p, seeded.</summary>
public sealed class GenerationOptions
{
    /// <summary>Longest continuation, in tokens. Default 100 (the course's lab).</summary>
    public int MaxNewTokens { get; init; } = 100;

    /// <summary>0 (default) is greedy; above 0 samples from softmax(logits / temperature).</summary>
    public double Temperature { get; init; }

    /// <summary>Sample only among the k most likely tokens (0: all).</summary>
    public int TopK { get; init; }

    /// <summary>Sample only within the smallest set of tokens whose probability reaches p (1: all).</summary>
    public double TopP { get; init; } = 1.0;

    /// <summary>Seed of the sampler; the same seed, prompt and model give the same text.</summary>
    public int Seed { get; init; }

    /// <summary>Divide positive logits (multiply negative ones) of tokens already in the text by this (CTRL's penalty); 1 (default) is off.</summary>
    public double RepetitionPenalty { get; init; } = 1.0;

    /// <summary>Stop when the generated text contains one of these; the stop string is not returned.</summary>
    public IReadOnlyList<string> StopSequences { get; init; } = [];

    /// <summary>Keep generating past end of text, always <see cref="MaxNewTokens"/> tokens (vLLM's <c>ignore_eos</c>): for benchmarks and token-for-token checks.</summary>
    public bool IgnoreEos { get; init; }

    /// <summary>Fails on settings that cannot generate (negative lengths, a non-positive penalty, NaN, empty stop strings).</summary>
    public void Validate()
    {
        if (MaxNewTokens < 0) throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), "MaxNewTokens must not be negative.");
        if (double.IsNaN(Temperature) || Temperature < 0) throw new ArgumentOutOfRangeException(nameof(Temperature), "Temperature must be 0 (greedy) or positive.");
        if (TopK < 0) throw new ArgumentOutOfRangeException(nameof(TopK), "TopK must be 0 (all) or positive.");
        if (double.IsNaN(TopP) || TopP <= 0 || TopP > 1) throw new ArgumentOutOfRangeException(nameof(TopP), "TopP must be in (0, 1].");
        if (double.IsNaN(RepetitionPenalty) || RepetitionPenalty <= 0) throw new ArgumentOutOfRangeException(nameof(RepetitionPenalty), "RepetitionPenalty must be positive (1 is off).");
        if (StopSequences.Any(string.IsNullOrEmpty)) throw new ArgumentException("Stop sequences must not be empty.", nameof(StopSequences));
    }
}

