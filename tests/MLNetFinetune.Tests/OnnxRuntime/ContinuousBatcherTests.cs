using MLNetFinetune.Generation;
using MLNetFinetune.OnnxRuntime;
using MLNetFinetune.Tests.Server;

namespace MLNetFinetune.Tests.OnnxRuntime;

[Collection(TorchCollection.Name)]
public class ContinuousBatcherTests(ExportedTinyModel exported) : IClassFixture<ExportedTinyModel>
{
    static readonly string[] Prompts =
    [
        "### Question:\nWhat is the capital?\n\n### Answer:", "Which file holds the config?", "a", "The model reads passages and answers",
        "Tokenizers split text", "Export to ONNX with a KV cache and serve it", "b c d",
    ];

    // With the default prefill budget the joining requests are prefilled together; with 8 tokens, each alone.
    [Theory]
    [InlineData(1024)]
    [InlineData(8)]
    public async Task RequestsJoiningAndLeavingMidBatchGetWhatTheyGetAlone(int maxPrefillTokens)
    {
        using var model = OnnxCausalLM.Load(exported.Folder, "cpu", threads: 1);
        // Different lengths, so rows leave at different steps; one sampled row, seeded; later requests join a running batch.
        var options = Prompts.Select((_, i) => new GenerationOptions
        {
            MaxNewTokens = 6 + 3 * i, IgnoreEos = i % 2 == 0, Temperature = i == 3 ? 0.9 : 0, Seed = 7 + i,
        }).ToArray();
        using var batcher = new ContinuousBatcher(model, maxBatch: 4, maxPrefillTokens);
        var requests = new List<(int Index, BatchedGeneration Generation)>();
        long[] Ids(int i) => [.. model.Tokenizer.EncodeSequence(Prompts[i]).Select(t => (long)t)];
        for (int i = 0; i < 3; i++) requests.Add((i, batcher.Submit(Ids(i), options[i])));
        var wait = DateTime.UtcNow;
        while (batcher.DecodeSteps < 3 && DateTime.UtcNow - wait < TimeSpan.FromSeconds(30)) await Task.Delay(5);
        Assert.True(batcher.DecodeSteps >= 3, "the first requests never started decoding");
        for (int i = 3; i < Prompts.Length; i++) requests.Add((i, batcher.Submit(Ids(i), options[i])));

        int tokens = 0;
        foreach (var (i, generation) in requests)
        {
            var result = await generation.Completion.WaitAsync(TimeSpan.FromSeconds(60));
            string alone = model.Generate(Prompts[i], options[i]);
            Assert.Equal(alone, result.Text);
            Assert.Equal(Ids(i).Length, result.PromptTokens);
            if (result.FinishReason == "length") Assert.Equal(options[i].MaxNewTokens, result.CompletionTokens);
            if (options[i].IgnoreEos) Assert.Equal("length", result.FinishReason);
            tokens += result.CompletionTokens;
        }
        // Shared steps: one at a time would take a step per token after the first (the prefill chooses it).
        Assert.True(batcher.DecodeSteps < tokens - Prompts.Length, $"{batcher.DecodeSteps} decode steps for {tokens} tokens: the requests did not share steps");
        Assert.Equal(0, batcher.Running);
    }

    [Fact]
    public async Task StreamedPiecesMakeTheTextAndACancelledRequestLeavesTheBatch()
    {
        using var model = OnnxCausalLM.Load(exported.Folder, "cpu", threads: 1);
        using var batcher = new ContinuousBatcher(model, maxBatch: 2);
        long[] prompt = [.. model.Tokenizer.EncodeSequence(Prompts[0]).Select(t => (long)t)];
        var options = new GenerationOptions { MaxNewTokens = 20, IgnoreEos = true, StopSequences = ["zzz"] };
        var streamed = batcher.Submit(prompt, options, streaming: true);
        var pieces = new List<string>();
        await foreach (string piece in streamed.Pieces.ReadAllAsync()) pieces.Add(piece);
        Assert.Equal((await streamed.Completion).Text, string.Concat(pieces));
        Assert.True(pieces.Count > 1, "the text came in one piece, not as it was generated");

        using var cancel = new CancellationTokenSource();
        var endless = batcher.Submit(prompt, new GenerationOptions { MaxNewTokens = 200, IgnoreEos = true }, streaming: true, cancel.Token);
        await endless.Pieces.ReadAsync();
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => endless.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        var wait = DateTime.UtcNow;
        while (batcher.Running > 0 && DateTime.UtcNow - wait < TimeSpan.FromSeconds(10)) await Task.Delay(5);
        Assert.Equal(0, batcher.Running);
    }
}
