namespace MLNetFinetune.TorchSharp.Training;

/// <summary>Linear warmup to the peak, then cosine decay to the floor at the last step (nanoGPT's schedule).</summary>
public static class LearningRateSchedule
{
    /// <summary>The learning rate for optimizer step <paramref name="step"/> (0-based) of <paramref name="totalSteps"/>.</summary>
    public static double At(int step, int totalSteps, double peak, double floor, int warmupSteps)
    {
        if (warmupSteps > 0 && step < warmupSteps) return peak * (step + 1) / warmupSteps;
        int decaySteps = Math.Max(1, totalSteps - warmupSteps - 1); // the last step (totalSteps − 1) lands on the floor
        double progress = Math.Clamp((double)(step - warmupSteps) / decaySteps, 0, 1);
        return floor + 0.5 * (1 + Math.Cos(Math.PI * progress)) * (peak - floor);
    }
}
