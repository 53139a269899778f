using System.Text.Json;

namespace MLNetFinetune.PairGathering;

/// <summary>
/// What a gathering run ended with. <see cref="Kept"/>, <see cref="Rejects"/> and <see cref="Malformed"/> count the
/// whole file, earlier runs included, so a resumed run reports what an uninterrupted one would; the rest is this run's.
/// </summary>
/// <param name="Kept">Pairs in the file.</param>
/// <param name="Rejects">Dropped pairs (and inputs that gave none), by reason; every reason is present.</param>
/// <param name="Malformed">Replies that were not the JSON asked for (documents), whether or not the retry mended them.</param>
/// <param name="Retries">Requests this run retried after a rate limit or server error.</param>
/// <param name="Inputs">Inputs (or documents) this run asked about.</param>
/// <param name="Resumed">Inputs earlier runs had finished.</param>
/// <param name="Seconds">This run's wall time.</param>
public sealed record PairGatheringReport(long Kept, IReadOnlyDictionary<RejectReason, long> Rejects, long Malformed, long Retries, long Inputs, long Resumed, double Seconds)
{
    /// <summary>One JSON object on one line: <c>{"kept":…,"rejects":{"duplicate":…,…},"malformed":…,"retries":…,"inputs":…,"resumed":…,"seconds":…}</c>.</summary>
    public string ToJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteNumber("kept", Kept);
            w.WriteStartObject("rejects");
            foreach (var reason in Enum.GetValues<RejectReason>()) w.WriteNumber(PairStore.NameOf(reason), Rejects.GetValueOrDefault(reason));
            w.WriteEndObject();
            w.WriteNumber("malformed", Malformed);
            w.WriteNumber("retries", Retries);
            w.WriteNumber("inputs", Inputs);
            w.WriteNumber("resumed", Resumed);
            w.WriteNumber("seconds", Math.Round(Seconds, 2));
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <inheritdoc />
    public override string ToString() => ToJson();
}
