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
}

