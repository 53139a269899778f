using Microsoft.ML.OnnxRuntime;
using MLNetFinetune.Export;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.OnnxRuntime;

/// <summary>
/// Gathers <see cref="ActivationStatistics"/> for a quantized export: the model directory is exported as a float graph
/// that also outputs every linear layer's input, ONNX Runtime runs it over the calibration text, and an even sample of
/// the tokens' input rows is kept per layer.
/// </summary>
public static class ActivationCalibration
{
    /// <summary>
    /// Runs <paramref name="modelDirectory"/> over <paramref name="texts"/> (tokenized with its tokenizer, in sequences
    /// of at most <paramref name="sequenceLength"/> tokens, <paramref name="maxTokens"/> in all) and keeps
    /// <paramref name="rows"/> evenly spaced tokens' inputs for each linear layer.
    /// </summary>
    public static ActivationStatistics Collect(string modelDirectory, IEnumerable<string> texts, int maxTokens = 4096, int rows = 128, int sequenceLength = 256)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(sequenceLength, 1);
        var (config, tokenizer) = ModelDirectory.ReadConfigAndTokenizer(modelDirectory);
        sequenceLength = Math.Min(sequenceLength, config.MaxPositionEmbeddings);
        var sequences = new List<long[]>();
        int total = 0;
        foreach (string text in texts)
        {
            var ids = tokenizer.EncodeSequence(text);
            for (int start = 0; start < ids.Count && total < maxTokens; start += sequenceLength)
            {
                var chunk = ids.Skip(start).Take(Math.Min(sequenceLength, maxTokens - total)).Select(i => (long)i).ToArray();
                sequences.Add(chunk);
                total += chunk.Length;
            }
            if (total >= maxTokens) break;
        }
        if (total == 0) throw new ArgumentException("The calibration text is empty: it gave no tokens.", nameof(texts));

        string folder = Path.Combine(Path.GetTempPath(), $"mlnetft-calibration-{Path.GetRandomFileName()}");
        try
        {
            OnnxExporter.Export(modelDirectory, new OnnxExportOptions { OutputDirectory = folder, CalibrationOutputs = true });
            using var session = new InferenceSession(Path.Combine(folder, OnnxExporter.ModelFile));
            var outputs = session.OutputMetadata.Keys.Where(k => k.StartsWith(OnnxExporter.CalibrationOutputPrefix, StringComparison.Ordinal)).ToArray();
            var kept = outputs.ToDictionary(o => o, _ => new List<float>());
            // Token t of the whole text (in order) is kept when it is the next of `rows` evenly spaced ones.
            int next = 0, seen = 0;
            foreach (var ids in sequences)
            {
                var keep = new List<int>();
                for (int p = 0; p < ids.Length; p++, seen++)
                    if (next < rows && seen == (int)((long)next * total / Math.Min(rows, total))) { keep.Add(p); next++; }
                if (keep.Count == 0) continue;
                using var values = Run(session, config, ids, outputs);
                for (int o = 0; o < outputs.Length; o++)
                {
                    var all = values[o].GetTensorDataAsSpan<float>();
                    int width = all.Length / ids.Length;
                    foreach (int p in keep) kept[outputs[o]].AddRange(all.Slice(p * width, width).ToArray());
                }
            }
            return new ActivationStatistics(kept.ToDictionary(k => k.Key[OnnxExporter.CalibrationOutputPrefix.Length..], k => k.Value.ToArray()), total);
        }
        finally
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    // One sequence, batch 1, no past: the calibration outputs, in the order asked.
    static IDisposableReadOnlyCollection<OrtValue> Run(InferenceSession session, ModelConfig config, long[] ids, string[] outputs)
    {
        var (names, values, owned) = OnnxCausalLM.Inputs(config, halfCache: false, ids, Enumerable.Range(0, ids.Length).Select(i => (long)i).ToArray(),
            Enumerable.Repeat(1L, ids.Length).ToArray(), batch: 1, past: null);
        try
        {
            using var options = new RunOptions();
            return session.Run(options, names, values, outputs);
        }
        finally
        {
            foreach (var v in owned) v.Dispose();
        }
    }
}
