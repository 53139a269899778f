using System.Runtime.CompilerServices;
using Microsoft.ML.OnnxRuntime;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// Generation with ONNX Runtime from an exported folder (<see cref="OnnxExporter"/>): no libtorch. The KV cache lives
/// in ORT values that each step's outputs hand to the next step's inputs, so on CPU no step copies the cache. (With
/// the CUDA provider the outputs come back through host memory; binding them to device memory is not done yet.)
/// </summary>
public sealed class OnnxCausalLM : IDisposable
{
    readonly InferenceSession _session;
    readonly string[] _outputNames;

    OnnxCausalLM(InferenceSession session, GptNeoXConfig config, TextTokenizer tokenizer, string provider, string folder)
    {
        _session = session;
        Config = config;
        Tokenizer = tokenizer;
        Provider = provider;
        Folder = folder;
        _outputNames = ["logits", .. Enumerable.Range(0, config.NumHiddenLayers).SelectMany(i => new[] { $"present.{i}.key", $"present.{i}.value" })];
        _halfCache = session.InputMetadata["past_key_values.0.key"].ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16;
    }

    readonly bool _halfCache; // a float16 export keeps its cache in float16

    /// <summary>The model's shape.</summary>
    public GptNeoXConfig Config { get; }

    /// <summary>Its tokenizer.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>The execution provider in use, and for <c>auto</c> why: <c>CUDA</c>, or <c>CPU (CUDA unavailable: …)</c>.</summary>
    public string Provider { get; }

    /// <summary>The folder the model came from.</summary>
    public string Folder { get; }

    /// <summary>
    /// Loads an exported folder. <paramref name="provider"/>: <c>auto</c> uses CUDA when its provider loads, else CPU;
    /// <c>cuda</c> fails with the reason when it cannot; <c>cpu</c>.
    /// </summary>
    public static OnnxCausalLM Load(string folder, string provider = "auto")
    {
        string modelPath = Path.Combine(folder, OnnxExporter.ModelFile);
        if (!File.Exists(modelPath))
            throw new FileNotFoundException($"'{folder}' has no {OnnxExporter.ModelFile}; export a model directory first (OnnxExporter.Export or `mlnet-finetune export`).", modelPath);
        var config = GptNeoXConfig.Load(Path.Combine(folder, ModelDirectory.ConfigFile));
        TextTokenizer tokenizer;
        try
        {
            tokenizer = TextTokenizer.Load(folder);
        }
        catch (FileNotFoundException e)
        {
            throw new FileNotFoundException($"'{folder}' has no tokenizer: {e.Message}", e.FileName, e);
        }
        tokenizer.CheckFits(config.VocabSize, Path.Combine(folder, ModelDirectory.ConfigFile));

        var options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
        string chosen = "CPU";
        switch (provider.ToLowerInvariant())
        {
            case "cpu":
                break;
            case "cuda":
                try { options.AppendExecutionProvider_CUDA(0); chosen = "CUDA"; }
                catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
                {
                    options.Dispose();
                    throw new InvalidOperationException($"The CUDA execution provider is unavailable: {e.Message.Trim()} " +
                        "It needs an NVIDIA driver and the CUDA 13 libraries (cudart, cublas, cudnn) on LD_LIBRARY_PATH; use provider 'cpu' or 'auto'.", e);
                }
                break;
            case "auto":
                // Probing CUDA on a machine without it is expected to fail; keep ONNX Runtime from logging that as an error.
                var level = OrtEnv.Instance().EnvLogLevel;
                OrtEnv.Instance().EnvLogLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_FATAL;
                try { options.AppendExecutionProvider_CUDA(0); chosen = "CUDA"; }
                catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
                {
                    options.Dispose();
                    options = new SessionOptions { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL };
                    chosen = $"CPU (CUDA unavailable: {e.Message.Trim().Split('\n')[0]})";
                }
                finally
                {
                    OrtEnv.Instance().EnvLogLevel = level;
                }
                break;
            default:
                throw new ArgumentException($"Unknown execution provider '{provider}': use auto, cpu or cuda.", nameof(provider));
        }
        var session = new InferenceSession(modelPath, options);
        return new OnnxCausalLM(session, config, tokenizer, chosen, folder);
    }

    /// <summary>
    /// One step over a batch: <paramref name="ids"/>, <paramref name="positions"/> [batch, seq] and <paramref name="mask"/>
    /// [batch, past + seq], with the cache of the previous step (null for the first). Returns the logits
    /// [batch, seq, vocab] and the new cache, which the caller passes to the next step (and disposes).
    /// </summary>
    public (float[] Logits, OrtValue[] Cache) Forward(long[] ids, long[] positions, long[] mask, int batch, OrtValue[]? past)
    {
        int layers = Config.NumHiddenLayers;
        if (batch <= 0 || ids.Length == 0 || ids.Length % batch != 0 || positions.Length != ids.Length || mask.Length % batch != 0)
            throw new ArgumentException($"Inconsistent shapes: {ids.Length} ids, {positions.Length} positions, {mask.Length} mask values for a batch of {batch}.");
        int seq = ids.Length / batch;
        long pastLength = mask.Length / batch - seq;
        if (pastLength < 0) throw new ArgumentException("The mask must cover the past and the new tokens.");
        if (past == null ? pastLength != 0 : past.Length != 2 * layers)
            throw new ArgumentException(past == null ? "A mask longer than the ids needs the cache it describes." : $"The cache holds {past.Length} values; the model has {2 * layers}.");
        var names = new List<string> { "input_ids", "attention_mask", "position_ids" };
        var values = new List<OrtValue>
        {
            OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]),
            OrtValue.CreateTensorValueFromMemory(mask, [batch, mask.Length / batch]),
            OrtValue.CreateTensorValueFromMemory(positions, [batch, seq]),
        };
        var empty = new List<OrtValue>();
        for (int i = 0; i < layers; i++)
        {
            names.Add($"past_key_values.{i}.key");
            names.Add($"past_key_values.{i}.value");
            if (past != null) { values.Add(past[2 * i]); values.Add(past[2 * i + 1]); }
            else
            {
                for (int kv = 0; kv < 2; kv++)
                {
                    long[] shape = [batch, Config.NumAttentionHeads, 0, Config.HeadDim];
                    var none = _halfCache
                        ? OrtValue.CreateTensorValueFromMemory(Array.Empty<Float16>(), shape)
                        : OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), shape);
                    empty.Add(none);
                    values.Add(none);
                }
            }
        }
        IDisposableReadOnlyCollection<OrtValue> outputs;
        try
        {
            using var runOptions = new RunOptions();
            outputs = _session.Run(runOptions, names, values, _outputNames);
        }
        finally
        {
            for (int i = 0; i < 3; i++) values[i].Dispose();
            foreach (var v in empty) v.Dispose();
        }
        var logits = outputs[0].GetTensorDataAsSpan<float>().ToArray();
        var cache = outputs.Skip(1).ToArray();
        outputs[0].Dispose();
        return (logits, cache);
    }

    /// <summary>Generates a continuation of one prompt.</summary>
    public string Generate(string prompt, GenerationOptions? options = null) => Generate([prompt], options)[0];

    /// <summary>
    /// Generates continuations of several prompts in one batch: prompts are padded on the left (so every row's last
    /// token is real), the mask hides the padding and positions count real tokens only. Rows stop at end of text or
    /// a stop sequence; the batch stops when all have.
    /// </summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options = null) => Generate(prompts, options, CancellationToken.None);

    /// <summary>Like <see cref="Generate(IReadOnlyList{string}, GenerationOptions)"/>, stopping between steps when <paramref name="cancellationToken"/> fires.</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options, CancellationToken cancellationToken)
    {
        var results = new string[prompts.Count];
        foreach (var (row, text) in Stream(prompts, options ?? new GenerationOptions(), cancellationToken))
            if (row >= 0) results[row] = text;
        return results;
    }

    /// <summary>Streams one prompt's continuation as text pieces, in order; their concatenation is what <see cref="Generate(string, GenerationOptions)"/> returns.</summary>
    public async IAsyncEnumerable<string> GenerateStreaming(string prompt, GenerationOptions? options = null, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        options ??= new GenerationOptions();
        // Partial text is held back by a stop sequence's length less one, so no prefix of a stop string is ever sent.
        options.Validate();
        int holdBack = options.StopSequences.Count == 0 ? 0 : Math.Max(0, options.StopSequences.Max(s => s.Length) - 1);
        string sent = "";
        foreach (var (row, text) in Stream([prompt], options, cancellationToken, partial: true))
        {
            string ready = text;
            if (row < 0)
            {
                // A piece may also end inside a multi-byte character; wait until the character is complete.
                if (ready.EndsWith('\uFFFD')) ready = ready[..^1];
                ready = ready[..Math.Max(0, ready.Length - holdBack)];
            }
            if (ready.Length > sent.Length && ready.StartsWith(sent, StringComparison.Ordinal))
            {
                yield return ready[sent.Length..];
                sent = ready;
            }
            await Task.Yield();
        }
    }

    // Yields (-1, partial text of row 0) after each step when partial, and (row, final text) as rows finish.
    IEnumerable<(int Row, string Text)> Stream(IReadOnlyList<string> prompts, GenerationOptions options, CancellationToken cancellationToken, bool partial = false)
    {
        options.Validate();
        int batch = prompts.Count;
        if (batch == 0) yield break;
        long eos = Tokenizer.EosId ?? Config.EosTokenId;
        var encoded = prompts.Select(p => Tokenizer.Encode(p).Select(i => (long)i).ToArray()).ToArray();
        for (int r = 0; r < batch; r++)
        {
            if (encoded[r].Length == 0) throw new ArgumentException($"Prompt {r} is empty.");
            if (encoded[r].Length + options.MaxNewTokens > Config.MaxPositionEmbeddings)
                throw new ArgumentException($"Prompt {r} has {encoded[r].Length} tokens; with {options.MaxNewTokens} new ones that exceeds the model's context of {Config.MaxPositionEmbeddings}.");
        }
        int longest = encoded.Max(e => e.Length);
        long pad = Tokenizer.PadId ?? Config.EosTokenId;
        var ids = new long[batch * longest];
        var positions = new long[batch * longest];
        var mask = new List<long>[batch];
        for (int r = 0; r < batch; r++)
        {
            int offset = longest - encoded[r].Length;
            mask[r] = [.. Enumerable.Repeat(0L, offset), .. Enumerable.Repeat(1L, encoded[r].Length)];
            for (int t = 0; t < longest; t++)
            {
                ids[r * longest + t] = t < offset ? pad : encoded[r][t - offset];
                positions[r * longest + t] = Math.Max(0, t - offset);
            }
        }
        var generated = Enumerable.Range(0, batch).Select(_ => new List<long>()).ToArray();
        var done = new bool[batch];
        var random = new Random(options.Seed);
        OrtValue[]? cache = null;
        int seq = longest;
        try
        {
            for (int step = 0; step < options.MaxNewTokens && !done.All(d => d); step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var (logits, next) = Forward(ids, positions, mask.SelectMany(m => m).ToArray(), batch, cache);
                if (cache != null) foreach (var v in cache) v.Dispose();
                cache = next;
                int vocab = Config.VocabSize;
                ids = new long[batch];
                positions = new long[batch];
                for (int r = 0; r < batch; r++)
                {
                    long token = pad;
                    if (!done[r])
                    {
                        var last = logits.AsSpan(((r + 1) * seq - 1) * vocab, vocab).ToArray();
                        token = Sampling.Next(last, options, random, encoded[r].Concat(generated[r]), Tokenizer.VocabSize);
                        if (token == eos) { done[r] = true; token = pad; }
                        else
                        {
                            generated[r].Add(token);
                            if (options.StopSequences.Count > 0 && Sampling.CutAtStop(Decode(generated[r]), options.StopSequences).Stopped) done[r] = true;
                        }
                        if (done[r]) yield return (r, Finish(generated[r], options));
                    }
                    ids[r] = token;
                    positions[r] = mask[r].Sum();
                    mask[r].Add(1);
                }
                seq = 1;
                if (partial && !done[0]) yield return (-1, Decode(generated[0]));
            }
            for (int r = 0; r < batch; r++)
                if (!done[r]) yield return (r, Finish(generated[r], options));
        }
        finally
        {
            if (cache != null) foreach (var v in cache) v.Dispose();
        }
    }

    string Decode(List<long> tokens) => Tokenizer.Decode(tokens.Select(t => (int)t));

    string Finish(List<long> tokens, GenerationOptions options) => Sampling.CutAtStop(Decode(tokens), options.StopSequences).Text;

    /// <inheritdoc />
    public void Dispose() => _session.Dispose();
}
