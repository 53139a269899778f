using static TorchSharp.torch;

namespace MLNetFinetune.TorchSharp.Modeling;

/// <summary>
/// The keys and values of every layer for the tokens seen so far, so each decoding step computes only the new token.
/// Preallocated to a capacity (prompt + new tokens): a step writes its slice in place instead of concatenating, and
/// attention reads a view of the filled part.
/// </summary>
public sealed class KeyValueCache : IDisposable
{
    readonly Tensor[] _keys, _values; // [batch, heads, capacity, head_dim] per layer

    /// <summary>An empty cache.</summary>
    public KeyValueCache(int layers, long batch, int heads, long capacity, int headDim, Device device)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity), "The cache needs room for at least one token.");
        _keys = Enumerable.Range(0, layers).Select(_ => zeros([batch, heads, capacity, headDim], float32, device)).ToArray();
        _values = Enumerable.Range(0, layers).Select(_ => zeros([batch, heads, capacity, headDim], float32, device)).ToArray();
        Capacity = capacity;
    }

    /// <summary>Tokens held.</summary>
    public long Length { get; private set; }

    /// <summary>Tokens it can hold.</summary>
    public long Capacity { get; }

    /// <summary>Writes a layer's new keys and values after the held ones; returns views of all of them.</summary>
    internal (Tensor Keys, Tensor Values) Append(int layer, Tensor keys, Tensor values)
    {
        long end = Length + keys.shape[2];
        if (end > Capacity) throw new InvalidOperationException($"The KV cache holds {Capacity} tokens; this step would need {end}.");
        using (no_grad())
        {
            _keys[layer].narrow(2, Length, end - Length).copy_(keys);
            _values[layer].narrow(2, Length, end - Length).copy_(values);
        }
        return (_keys[layer].narrow(2, 0, end), _values[layer].narrow(2, 0, end));
    }

    /// <summary>Marks <paramref name="tokens"/> more positions as filled (after every layer has appended them).</summary>
    internal void Advance(long tokens) => Length += tokens;

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var t in _keys.Concat(_values)) t.Dispose();
    }
}

/// <summary>Boolean "may attend" masks <c>[batch, 1, queries, keys]</c> for <see cref="TransformerForCausalLM.Forward"/>.</summary>
public static class AttentionMasks
{
    /// <summary>Causal attention for <paramref name="seq"/> new tokens after <paramref name="past"/> cached ones: <c>[1, 1, seq, past + seq]</c>.</summary>
    public static Tensor Causal(long seq, long past, Device device) =>
        ones(seq, past + seq, ScalarType.Bool, device).tril(past).unsqueeze(0).unsqueeze(0);

    /// <summary>
    /// Causal attention over left-padded rows: <paramref name="keyMask"/> <c>[batch, past + seq]</c> is 1 for real tokens and
    /// 0 for padding. A padding query still sees itself, so no row of the softmax is empty (an empty row is NaN, and
    /// NaN values would leak into real rows through zero weights).
    /// </summary>
    public static Tensor Padded(Tensor keyMask, long seq)
    {
        long total = keyMask.shape[1], past = total - seq;
        var causal = Causal(seq, past, keyMask.device);
        var visible = keyMask.to(ScalarType.Bool).unsqueeze(1).unsqueeze(1);
        var self = eye(seq, total - past, ScalarType.Bool, keyMask.device);
        var diagonal = cat([zeros(seq, past, ScalarType.Bool, keyMask.device), self], 1).unsqueeze(0).unsqueeze(0);
        return causal.logical_and(visible).logical_or(diagonal);
    }

    /// <summary>
    /// Per-example attention for packed rows: <paramref name="exampleIds"/> <c>[batch, seq]</c> numbers the example each
    /// token belongs to, and a token sees only earlier tokens of its own example (padding-free packing).
    /// </summary>
    public static Tensor PerExample(Tensor exampleIds)
    {
        long seq = exampleIds.shape[1];
        var same = exampleIds.unsqueeze(2).eq(exampleIds.unsqueeze(1)); // [batch, seq, seq]
        return same.logical_and(Causal(seq, 0, exampleIds.device).squeeze(0)).unsqueeze(1);
    }
}
