using MLNetFinetune.Evaluation;

namespace MLNetFinetune.PairGathering;

/// <summary>Why a pair (or an input that gave none) was not kept.</summary>
public enum RejectReason
{
    /// <summary>The same question and answer as a kept pair, after lower-casing and dropping punctuation.</summary>
    Duplicate,
    /// <summary>Close to a kept pair (see <see cref="PairGatheringOptions.NearDuplicateThreshold"/>).</summary>
    NearDuplicate,
    /// <summary>The answer declines the task (see <see cref="PairGatheringOptions.RefusalPrefixes"/>).</summary>
    Refusal,
    /// <summary>An empty answer or question, or a document the model wrote no pairs about.</summary>
    Empty,
    /// <summary>An answer over <see cref="PairGatheringOptions.MaxAnswerChars"/>, or cut at the token limit.</summary>
    TooLong,
    /// <summary>Documents: the reply was not the JSON asked for, twice (the request is retried once).</summary>
    Malformed,
}

/// <summary>
/// Decides, pair by pair and in input order, what is kept: empty, refusal and over-long answers are dropped, then exact
/// and near duplicates of pairs kept before. Near duplicates are found through an index from word 3-gram to the kept
/// pairs holding it, so each check counts shared 3-grams only with pairs that share some.
/// </summary>
internal sealed class PairFilter(PairGatheringOptions options)
{
    static readonly AnswerNormalization Normalization = new() { IgnoreCase = true, IgnorePunctuation = true };

    readonly HashSet<string> _exact = new(StringComparer.Ordinal);
    readonly Dictionary<string, List<int>> _index = new(StringComparer.Ordinal);
    readonly List<int> _sizes = [];

    /// <summary>The reason to drop the pair, or null to keep it (and remember it for later checks).</summary>
    public RejectReason? Keep(string question, string answer, bool cut)
    {
        var reason = Check(question, answer, cut, out string key, out var grams);
        if (reason == null) Remember(key, grams);
        return reason;
    }

    /// <summary>Remembers a pair kept by an earlier run (the index is rebuilt from the pairs file).</summary>
    public void Add(string question, string answer)
    {
        string key = Key(question, answer);
        Remember(key, Grams(key));
    }

    RejectReason? Check(string question, string answer, bool cut, out string key, out HashSet<string> grams)
    {
        key = "";
        grams = [];
        if (string.IsNullOrWhiteSpace(question) || string.IsNullOrWhiteSpace(answer)) return RejectReason.Empty;
        string start = answer.TrimStart().Replace('\u2019', '\'');
        if (options.RefusalPrefixes.Any(p => start.StartsWith(p.Replace('\u2019', '\''), StringComparison.OrdinalIgnoreCase))) return RejectReason.Refusal;
        if (cut || answer.Length > options.MaxAnswerChars) return RejectReason.TooLong;
        key = Key(question, answer);
        if (_exact.Contains(key)) return RejectReason.Duplicate;
        grams = Grams(key);
        return options.NearDuplicateThreshold < 1 && IsNear(grams) ? RejectReason.NearDuplicate : null;
    }

    // Question and answer normalised, with a line between them so "a b" + "c" and "a" + "b c" stay apart.
    static string Key(string question, string answer) => Normalization.Apply(question) + "\n" + Normalization.Apply(answer);

    // Word 3-grams; a text of fewer than three words is its one gram.
    static HashSet<string> Grams(string key)
    {
        string[] words = key.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        if (words.Length < 3) return [string.Join(' ', words)];
        var grams = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i + 2 < words.Length; i++) grams.Add($"{words[i]} {words[i + 1]} {words[i + 2]}");
        return grams;
    }

    bool IsNear(HashSet<string> grams)
    {
        var shared = new Dictionary<int, int>();
        foreach (string gram in grams)
            if (_index.TryGetValue(gram, out var holders))
                foreach (int pair in holders) shared[pair] = shared.GetValueOrDefault(pair) + 1;
        foreach (var (pair, common) in shared)
            if ((double)common / (grams.Count + _sizes[pair] - common) >= options.NearDuplicateThreshold) return true;
        return false;
    }

    void Remember(string key, HashSet<string> grams)
    {
        _exact.Add(key);
        int id = _sizes.Count;
        _sizes.Add(grams.Count);
        foreach (string gram in grams)
        {
            if (!_index.TryGetValue(gram, out var holders)) _index[gram] = holders = [];
            holders.Add(id);
        }
    }
}
