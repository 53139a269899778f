using Microsoft.ML.OnnxRuntime;
using MLNetFinetune.Data;
using MLNetFinetune.Export;
using MLNetFinetune.Generation;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// Generation with ONNX Runtime from an exported folder (<see cref="OnnxExporter"/>): no libtorch. The KV cache lives
/// in ORT values that each step's outputs hand to the next step's inputs. With <see cref="IoBinding"/> (the default for
/// CUDA) a step runs through an <see cref="OrtIoBinding"/> that leaves the cache where the provider computed it (device
/// memory with CUDA) and brings only the logits to host memory, where sampling runs; without it every output, the whole
/// cache included, comes back to host memory each step (no copy on CPU, a round-trip per step with CUDA).
/// </summary>
public sealed class OnnxCausalLM : IDecoderModel, IDisposable
{
    readonly InferenceSession _session;
    readonly string[] _outputNames;
    readonly OrtMemoryInfo _cacheMemory; // where bound steps leave the cache: the provider's device memory

    OnnxCausalLM(InferenceSession session, ModelConfig config, TextTokenizer tokenizer, string provider, string folder, bool ioBinding)
    {
        _session = session;
        IoBinding = ioBinding;
        // CUDA's device allocator for device 0 (the provider is appended for device 0); the CPU provider's is the host's.
        _cacheMemory = provider == "CUDA"
            ? new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, 0, OrtMemType.Default)
            : OrtMemoryInfo.DefaultInstance;
        Config = config;
        Tokenizer = tokenizer;
        Provider = provider;
        Folder = folder;
        _outputNames = [OnnxContract.Logits, .. Enumerable.Range(0, config.NumHiddenLayers).SelectMany(i => new[] { OnnxContract.PresentKey(i), OnnxContract.PresentValue(i) })];
        _halfCache = session.InputMetadata[OnnxContract.PastKey(0)].ElementDataType == Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float16;
    }

    readonly bool _halfCache; // a float16 export keeps its cache in float16

    /// <summary>The model's shape.</summary>
    public ModelConfig Config { get; }

    /// <summary>Its tokenizer.</summary>
    public TextTokenizer Tokenizer { get; }

    /// <summary>The execution provider in use, and for <c>auto</c> why: <c>CUDA</c>, or <c>CPU (CUDA unavailable: …)</c>.</summary>
    public string Provider { get; }

    /// <summary>
    /// Whether steps run through an <see cref="OrtIoBinding"/> that keeps the cache in the provider's memory (see the
    /// class remarks); chosen at <see cref="Load"/>.
    /// </summary>
    public bool IoBinding { get; }

    /// <summary>The folder the model came from.</summary>
    public string Folder { get; }

    /// <summary>The prompt format the model was finetuned with (recorded in its folder), or null.</summary>
    public PromptFormat? Format { get; private init; }

    /// <summary>
    /// Loads an exported folder. <paramref name="provider"/>: <c>auto</c> uses CUDA when its provider loads, else CPU;
    /// <c>cuda</c> fails with the reason when it cannot; <c>cpu</c>. <paramref name="threads"/>: ONNX Runtime's intra-op
    /// threads on CPU; 0 keeps its default (one per physical core). <paramref name="ioBinding"/>: run steps through an
    /// <see cref="OrtIoBinding"/> that keeps the cache in device memory; null chooses it with CUDA, where it saves a
    /// round-trip of the whole cache through host memory per step, and not on CPU, where there is no copy to save and
    /// the bound path measured slower (docs/BENCHMARKS.md, Generate).
    /// </summary>
    public static OnnxCausalLM Load(string folder, string provider = "auto", int threads = 0, bool? ioBinding = null)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        string modelPath = Path.Combine(folder, OnnxExporter.ModelFile);
        if (!Directory.Exists(folder)) throw new DirectoryNotFoundException($"Exported model folder '{folder}' does not exist.");
        if (!File.Exists(modelPath))
            throw new FileNotFoundException($"'{folder}' has no {OnnxExporter.ModelFile}; export a model directory first (OnnxExporter.Export or `mlnet-finetune export`).", modelPath);
        var config = ModelConfig.Load(Path.Combine(folder, ModelDirectory.ConfigFile));
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

        SessionOptions NewOptions() => new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_ALL, IntraOpNumThreads = threads };
        var options = NewOptions();
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
                    options = NewOptions();
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
        return new OnnxCausalLM(session, config, tokenizer, chosen, folder, ioBinding ?? chosen == "CUDA") { Format = PromptFormats.Load(folder) };
    }

    /// <summary>
    /// One step over a batch: <paramref name="ids"/>, <paramref name="positions"/> [batch, seq] and <paramref name="mask"/>
    /// [batch, past + seq], with the cache of the previous step (null for the first). Returns the logits
    /// [batch, seq, vocab] and the new cache, which the caller passes to the next step (and disposes). With
    /// <see cref="IoBinding"/> and CUDA the cache values are in device memory: pass them on, do not read them.
    /// </summary>
    public (float[] Logits, OrtValue[] Cache) Forward(long[] ids, long[] positions, long[] mask, int batch, OrtValue[]? past) =>
        Forward(ids, positions, mask, batch, past, lastOnly: false);

    // With lastOnly, copies only each row's last-position logits out of ONNX Runtime's buffer ([batch, vocab]): a prefill
    // of a long batch would otherwise copy [batch, seq, vocab] floats that decoding never reads; into, when given and
    // [batch, vocab] long, receives them instead of a new array. With hostCache a bound step leaves the cache in host
    // memory (the batcher, which merges caches there when requests join and leave).
    internal (float[] Logits, OrtValue[] Cache) Forward(long[] ids, long[] positions, long[] mask, int batch, OrtValue[]? past, bool lastOnly, bool hostCache = false, float[]? into = null)
    {
        int layers = Config.NumHiddenLayers;
        if (batch <= 0 || ids.Length == 0 || ids.Length % batch != 0 || positions.Length != ids.Length || mask.Length % batch != 0)
            throw new ArgumentException($"Inconsistent shapes: {ids.Length} ids, {positions.Length} positions, {mask.Length} mask values for a batch of {batch}.");
        int seq = ids.Length / batch;
        long pastLength = mask.Length / batch - seq;
        if (pastLength < 0) throw new ArgumentException("The mask must cover the past and the new tokens.");
        if (past == null ? pastLength != 0 : past.Length != 2 * layers)
            throw new ArgumentException(past == null ? "A mask longer than the ids needs the cache it describes." : $"The cache holds {past.Length} values; the model has {2 * layers}.");
        var (names, values, owned) = Inputs(Config, _halfCache, ids, positions, mask, batch, past);
        IDisposableReadOnlyCollection<OrtValue> outputs;
        try
        {
            using var runOptions = new RunOptions();
            outputs = IoBinding ? RunBound(runOptions, names, values, hostCache ? OrtMemoryInfo.DefaultInstance : _cacheMemory) : _session.Run(runOptions, names, values, _outputNames);
        }
        finally
        {
            foreach (var v in owned) v.Dispose();
        }
        var all = outputs[0].GetTensorDataAsSpan<float>();
        int vocab = Config.VocabSize;
        float[] logits;
        if (!lastOnly) logits = all.ToArray();
        else
        {
            logits = into?.Length == batch * vocab ? into : new float[batch * vocab];
            for (int r = 0; r < batch; r++) all.Slice(((r + 1) * seq - 1) * vocab, vocab).CopyTo(logits.AsSpan(r * vocab));
        }
        var cache = outputs.Skip(1).ToArray();
        outputs[0].Dispose();
        return (logits, cache);
    }

    // A step's inputs by the contract's names: ids, mask and positions, then each layer's past keys and values, the
    // previous step's outputs or, for a first step, empty ones (the cache holds the key/value heads only). Owned are
    // the values made here, for the caller to dispose after the run.
    internal static (List<string> Names, List<OrtValue> Values, List<OrtValue> Owned) Inputs(ModelConfig config, bool halfCache,
        long[] ids, long[] positions, long[] mask, int batch, OrtValue[]? past)
    {
        int seq = ids.Length / batch;
        var names = new List<string> { OnnxContract.InputIds, OnnxContract.AttentionMask, OnnxContract.PositionIds };
        var values = new List<OrtValue>
        {
            OrtValue.CreateTensorValueFromMemory(ids, [batch, seq]),
            OrtValue.CreateTensorValueFromMemory(mask, [batch, mask.Length / batch]),
            OrtValue.CreateTensorValueFromMemory(positions, [batch, seq]),
        };
        var owned = new List<OrtValue>(values);
        for (int i = 0; i < config.NumHiddenLayers; i++)
        {
            names.Add(OnnxContract.PastKey(i));
            names.Add(OnnxContract.PastValue(i));
            if (past != null) { values.Add(past[2 * i]); values.Add(past[2 * i + 1]); }
            else
            {
                for (int kv = 0; kv < 2; kv++)
                {
                    long[] shape = [batch, config.KeyValueHeads, 0, config.HeadDim];
                    var none = halfCache
                        ? OrtValue.CreateTensorValueFromMemory(Array.Empty<Float16>(), shape)
                        : OrtValue.CreateTensorValueFromMemory(Array.Empty<float>(), shape);
                    owned.Add(none);
                    values.Add(none);
                }
            }
        }
        return (names, values, owned);
    }

    // One step through a binding made for it (a binding per call keeps Forward safe to call from several threads, as
    // Run is). Inputs are bound as they are: the ids, mask and positions from host memory, the past from the previous
    // step's outputs wherever ORT left them. The logits are bound to host memory, the presents to cacheMemory; the
    // outputs come back in the order bound, which is _outputNames' order, as Run returns them.
    IDisposableReadOnlyCollection<OrtValue> RunBound(RunOptions runOptions, List<string> names, List<OrtValue> values, OrtMemoryInfo cacheMemory)
    {
        using var binding = _session.CreateIoBinding();
        for (int i = 0; i < names.Count; i++) binding.BindInput(names[i], values[i]);
        binding.BindOutputToDevice(_outputNames[0], OrtMemoryInfo.DefaultInstance);
        for (int i = 1; i < _outputNames.Length; i++) binding.BindOutputToDevice(_outputNames[i], cacheMemory);
        _session.RunWithBinding(runOptions, binding);
        return binding.GetOutputValues();
    }

    /// <summary>Generates a continuation of one prompt.</summary>
    public string Generate(string prompt, GenerationOptions? options = null) => Generate([prompt], options)[0];

    /// <summary>
    /// Generates continuations of several prompts in one batch (<see cref="DecodeLoop"/>): prompts are padded on the left,
    /// the mask hides the padding and positions count real tokens only. Rows stop at end of text or a stop sequence.
    /// </summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options = null) => DecodeLoop.Generate(this, prompts, options);

    /// <summary>Like <see cref="Generate(IReadOnlyList{string}, GenerationOptions)"/>, stopping between steps when <paramref name="cancellationToken"/> fires.</summary>
    public IReadOnlyList<string> Generate(IReadOnlyList<string> prompts, GenerationOptions? options, CancellationToken cancellationToken) =>
        DecodeLoop.Generate(this, prompts, options, cancellationToken);

    /// <summary>Streams one prompt's continuation as text pieces, in order; their concatenation is what <see cref="Generate(string, GenerationOptions)"/> returns.</summary>
    public IAsyncEnumerable<string> GenerateStreaming(string prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default) =>
        DecodeLoop.Stream(this, prompt, options, cancellationToken);

    int IDecoderModel.LogitsSize => Config.VocabSize;
    int IDecoderModel.ContextLength => Config.MaxPositionEmbeddings;
    long IDecoderModel.EosId => Tokenizer.EosId ?? Config.EosTokenId;
    IReadOnlyCollection<long> IDecoderModel.EndIds => [.. Config.EosTokenIds.Select(id => (long)id).Append(((IDecoderModel)this).EosId).Distinct()];
    long IDecoderModel.PadId => Tokenizer.PadId ?? Config.EosTokenId;
    IDecoderSession IDecoderModel.Start(int batch, int capacity) => new Session(this);

    // The cache lives in the ORT values each step's outputs hand to the next step's inputs. Each step's logits go into
    // one array the session keeps (the loop reads them before its next step): a new [batch, vocab] array per token is a
    // large-object allocation (200 KB for a 50k vocabulary), and their collections cost a 4-bit model's short steps more
    // than its arithmetic.
    sealed class Session(OnnxCausalLM model) : IDecoderSession
    {
        OrtValue[]? _cache;
        float[]? _logits;

        public float[] Step(long[] ids, long[] positions, long[] mask, int batch)
        {
            var (logits, next) = model.Forward(ids, positions, mask, batch, _cache, lastOnly: true, into: _logits);
            Release();
            _cache = next;
            return _logits = logits;
        }

        void Release()
        {
            if (_cache != null) foreach (var v in _cache) v.Dispose();
            _cache = null;
        }

        public void Dispose() => Release();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _session.Dispose();
        if (!ReferenceEquals(_cacheMemory, OrtMemoryInfo.DefaultInstance)) _cacheMemory.Dispose();
    }
}
