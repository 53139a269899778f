namespace MLNetFinetune.Generation;

/// <summary>
/// Turns the growing text of one generation into pieces that are safe to send as they come: no piece ever holds part
/// of a stop string (text is held back by the longest stop string's length less one) or half of a multi-byte
/// character; the pieces concatenate to the final text.
/// </summary>
public sealed class TextStreamer(IReadOnlyList<string> stopSequences)
{
    readonly int _holdBack = stopSequences.Count == 0 ? 0 : Math.Max(0, stopSequences.Max(s => s.Length) - 1);
    string _sent = "";

    /// <summary>
    /// The new piece of <paramref name="text"/> (the whole text so far, already cut at a stop string when
    /// <paramref name="final"/>) that can be sent now; empty when nothing is ready.
    /// </summary>
    public string Next(string text, bool final)
    {
        string ready = text;
        if (!final)
        {
            // A token may end inside a multi-byte character; wait until the character is complete.
            if (ready.EndsWith('\uFFFD')) ready = ready[..^1];
            ready = ready[..Math.Max(0, ready.Length - _holdBack)];
        }
        if (ready.Length <= _sent.Length || !ready.StartsWith(_sent, StringComparison.Ordinal)) return "";
        string piece = ready[_sent.Length..];
        _sent = ready;
        return piece;
    }
}
