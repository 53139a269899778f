using System.Text.Encodings.Web;
using System.Text.Json;
using MLNetFinetune.Data;

namespace MLNetFinetune.PairGathering;

/// <summary>A pair kept, with where it came from.</summary>
internal sealed record KeptPair(string Question, string Answer, string Source);

/// <summary>A pair, or an input that gave none, that was dropped.</summary>
internal sealed record RejectedPair(RejectReason Reason, string Question, string Answer);

/// <summary>What became of one input: its kept pairs, its rejects, and how many of its replies were malformed.</summary>
internal sealed record InputOutcome(long Input, IReadOnlyList<KeptPair> Kept, IReadOnlyList<RejectedPair> Rejected, int Malformed);

/// <summary>The run settings a ledger records; a file is continued only with the same prompt and model.</summary>
internal sealed record LedgerSettings(string Mode, string Source, string Model, string PromptHash);

/// <summary>
/// The pairs file and its ledger, appended batch by batch so a killed run loses nothing it finished and a rerun
/// repeats nothing. The pairs file holds only pairs (<c>question</c>, <c>answer</c>, <c>source</c>, <c>model</c>,
/// <c>prompt_hash</c>), so <c>finetune --pairs</c> reads it as it is. The ledger (<c>OUT.ledger.jsonl</c>) holds the run
/// settings, then one line per input asked, in input order: how many pairs it gave to the file, its rejects with their
/// reasons, and its malformed replies. Each batch writes its pairs, flushed to disk, then its ledger lines, flushed to disk; so
/// on opening, the ledger (less a line cut short by a kill) says which inputs are done and how many pairs they own, and
/// the pairs file is cut back to exactly those pairs: pairs of inputs the ledger does not record yet are asked again.
/// </summary>
internal sealed class PairStore : IDisposable
{
    static readonly JsonWriterOptions Json = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    static readonly RejectReason[] Reasons = Enum.GetValues<RejectReason>();

    readonly FileStream _pairs;
    readonly FileStream _ledger;
    readonly LedgerSettings _settings;
    readonly long[] _rejects = new long[Reasons.Length];

    PairStore(FileStream pairs, FileStream ledger, LedgerSettings settings)
    {
        _pairs = pairs;
        _ledger = ledger;
        _settings = settings;
    }

    /// <summary>Inputs finished by earlier runs and this one.</summary>
    public long InputsDone { get; private set; }

    /// <summary>Pairs in the file.</summary>
    public long Kept { get; private set; }

    /// <summary>Malformed replies so far.</summary>
    public long Malformed { get; private set; }

    /// <summary>Rejects so far, by reason.</summary>
    public IReadOnlyDictionary<RejectReason, long> Rejects => Reasons.ToDictionary(r => r, r => _rejects[(int)r]);

    /// <summary>All rejects so far.</summary>
    public long Rejected => _rejects.Sum();

    /// <summary>
    /// Opens (or creates) the pairs file and its ledger, cut back to what the ledger records, and feeds the kept pairs to
    /// <paramref name="filter"/>, so duplicates of them are still caught.
    /// </summary>
    public static PairStore Open(string path, LedgerSettings settings, bool allowSettingsChange, PairFilter filter)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string ledgerPath = path + PairGatherer.LedgerSuffix;
        if (!File.Exists(ledgerPath) && File.Exists(path) && new FileInfo(path).Length > 0)
            throw new InvalidOperationException($"'{path}' exists but has no ledger ('{ledgerPath}'), so pairs generate did not make it; give another output file or remove it.");
        var pairs = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        FileStream? ledger = null;
        try
        {
            ledger = new FileStream(ledgerPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
            var store = new PairStore(pairs, ledger, settings);
            store.Load(path, ledgerPath, allowSettingsChange, filter);
            return store;
        }
        catch
        {
            ledger?.Dispose();
            pairs.Dispose();
            throw;
        }
    }

    void Load(string path, string ledgerPath, bool allowSettingsChange, PairFilter filter)
    {
        LedgerSettings? recorded = null;
        var lines = CompleteLines(_ledger, out long ledgerEnd);
        for (int i = 0; i < lines.Count; i++)
        {
            using var record = JsonRecords.ParseObject(lines[i], ledgerPath, i + 1);
            var root = record.RootElement;
            try
            {
                if (root.TryGetProperty("settings", out var s))
                {
                    recorded = new LedgerSettings(s.GetProperty("mode").GetString()!, s.GetProperty("source").GetString()!,
                        s.GetProperty("model").GetString()!, s.GetProperty("prompt_hash").GetString()!);
                    continue;
                }
                long input = root.GetProperty("input").GetInt64();
                if (input != InputsDone) throw new DataFileException(ledgerPath, i + 1, $"input {input} where input {InputsDone} was expected next; the ledger was edited");
                InputsDone++;
                Kept += root.GetProperty("kept").GetInt64();
                Malformed += root.GetProperty("malformed").GetInt64();
                foreach (var reject in root.GetProperty("rejects").EnumerateArray())
                    _rejects[(int)ReasonOf(reject.GetProperty("reason").GetString()!, ledgerPath, i + 1)]++;
            }
            catch (Exception e) when (e is KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new DataFileException(ledgerPath, i + 1, $"not a ledger record ({e.Message})", inner: e);
            }
        }
        _ledger.SetLength(ledgerEnd); // a line cut short by a kill is dropped: its input is asked again

        var pairLines = CompleteLines(_pairs, out _);
        if (pairLines.Count < Kept)
            throw new DataFileException(path, 0, $"{pairLines.Count} complete pairs where the ledger '{ledgerPath}' records {Kept}; the file was changed outside pairs generate: remove both files to start over");
        long end = 0;
        for (int i = 0; i < Kept; i++)
        {
            using var pair = JsonRecords.ParseObject(pairLines[i], path, i + 1);
            string? question = pair.RootElement.TryGetProperty("question", out var q) ? q.GetString() : null;
            string? answer = pair.RootElement.TryGetProperty("answer", out var a) ? a.GetString() : null;
            if (question == null || answer == null) throw new DataFileException(path, i + 1, "not a pair: no \"question\" or no \"answer\"");
            filter.Add(question, answer);
            end += pairLines[i].Length + 1;
        }
        _pairs.SetLength(end); // pairs the ledger does not own yet (a kill between the two writes): their inputs are asked again
        _pairs.Seek(0, SeekOrigin.End);
        _ledger.Seek(0, SeekOrigin.End);

        if (recorded == null || recorded.Model != _settings.Model || recorded.PromptHash != _settings.PromptHash)
        {
            if (recorded != null && !allowSettingsChange)
                throw new InvalidOperationException($"'{path}' was made with prompt {recorded.PromptHash} and model '{recorded.Model}'; this run has prompt " +
                    $"{_settings.PromptHash} and model '{_settings.Model}'. Continuing would mix the two: give another output file, remove it and its ledger, or allow the change (--force).");
            WriteAndSync(_ledger, [w => Write(w, _settings)]);
        }
    }

    /// <summary>Appends a batch: its pairs to the file, then its inputs to the ledger, each flushed to disk.</summary>
    public void Append(IReadOnlyList<InputOutcome> batch)
    {
        WriteAndSync(_pairs, batch.SelectMany(o => o.Kept).Select(pair => (Action<Utf8JsonWriter>)(w => WritePair(w, pair))));
        WriteAndSync(_ledger, batch.Select(outcome => (Action<Utf8JsonWriter>)(w => WriteInput(w, outcome))));
        foreach (var outcome in batch)
        {
            InputsDone++;
            Kept += outcome.Kept.Count;
            Malformed += outcome.Malformed;
            foreach (var reject in outcome.Rejected) _rejects[(int)reject.Reason]++;
        }
    }

    /// <summary>The name a reason has in the ledger and the report (<c>near_duplicate</c>).</summary>
    public static string NameOf(RejectReason reason) => reason switch
    {
        RejectReason.NearDuplicate => "near_duplicate",
        RejectReason.TooLong => "too_long",
        _ => reason.ToString().ToLowerInvariant(),
    };

    static RejectReason ReasonOf(string name, string path, long line) =>
        Reasons.FirstOrDefault(r => NameOf(r) == name, (RejectReason)(-1)) is var r && r >= 0 ? r
            : throw new DataFileException(path, line, $"unknown reject reason '{name}'");

    void WritePair(Utf8JsonWriter w, KeptPair pair)
    {
        w.WriteStartObject();
        w.WriteString("question", pair.Question);
        w.WriteString("answer", pair.Answer);
        w.WriteString("source", pair.Source);
        w.WriteString("model", _settings.Model);
        w.WriteString("prompt_hash", _settings.PromptHash);
        w.WriteEndObject();
    }

    static void WriteInput(Utf8JsonWriter w, InputOutcome outcome)
    {
        w.WriteStartObject();
        w.WriteNumber("input", outcome.Input);
        w.WriteNumber("kept", outcome.Kept.Count);
        w.WriteNumber("malformed", outcome.Malformed);
        w.WriteStartArray("rejects");
        foreach (var reject in outcome.Rejected)
        {
            w.WriteStartObject();
            w.WriteString("reason", NameOf(reject.Reason));
            w.WriteString("question", reject.Question);
            w.WriteString("answer", reject.Answer);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    static void Write(Utf8JsonWriter w, LedgerSettings s)
    {
        w.WriteStartObject();
        w.WriteStartObject("settings");
        w.WriteString("mode", s.Mode);
        w.WriteString("source", s.Source);
        w.WriteString("model", s.Model);
        w.WriteString("prompt_hash", s.PromptHash);
        w.WriteEndObject();
        w.WriteEndObject();
    }

    // Appends the records, one per line, in one write; the bytes reach the disk before it returns.
    static void WriteAndSync(FileStream file, IEnumerable<Action<Utf8JsonWriter>> records)
    {
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, Json))
            foreach (var record in records)
            {
                record(writer);
                writer.Flush();
                buffer.WriteByte((byte)'\n');
                writer.Reset();
            }
        if (buffer.Length == 0) return;
        file.Write(buffer.GetBuffer(), 0, (int)buffer.Length);
        file.Flush(flushToDisk: true);
    }

    // The complete lines of a file from its start, and where the last one ends; bytes after the last newline are a
    // record a kill cut short.
    static List<byte[]> CompleteLines(FileStream file, out long end)
    {
        file.Seek(0, SeekOrigin.Begin);
        var bytes = new byte[file.Length];
        file.ReadExactly(bytes);
        var lines = new List<byte[]>();
        int start = 0;
        for (int i = 0; i < bytes.Length; i++)
        {
            if (bytes[i] != (byte)'\n') continue;
            lines.Add(bytes[start..i]);
            start = i + 1;
        }
        end = start;
        return lines;
    }

    public void Dispose()
    {
        _pairs.Dispose();
        _ledger.Dispose();
    }
}
