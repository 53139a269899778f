using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace MLNetFinetune.Tokenization;

/// <summary>Options for training a byte-level BPE tokenizer.</summary>
public sealed class BpeTrainerOptions
{
    /// <summary>Total vocabulary size: special tokens + 256 byte tokens + merges. Default 8,192.</summary>
    public int VocabSize { get; init; } = 8192;

    /// <summary>Stop merging when the most frequent pair occurs fewer times than this. Default 2.</summary>
    public int MinPairFrequency { get; init; } = 2;

    /// <summary>Special tokens, given the first ids in this order. Default <c>&lt;|endoftext|&gt;</c> (0) and <c>&lt;|padding|&gt;</c> (1), as GPT-NeoX.</summary>
    public IReadOnlyList<string> SpecialTokens { get; init; } = [TextTokenizer.EndOfText, TextTokenizer.Padding];

    /// <summary>The text column of the training data. Default <c>Text</c> (the corpus loader's).</summary>
    public string TextColumn { get; init; } = "Text";

    /// <summary>Receives progress: words counted, then merges done.</summary>
    public IProgress<BpeTrainingProgress>? Progress { get; init; }
}

/// <summary>Progress of a BPE training run.</summary>
/// <param name="Phase"><c>counting</c> (pre-tokenizing the corpus) or <c>merging</c>.</param>
/// <param name="Done">Documents counted, or merges made.</param>
/// <param name="Total">Merges wanted (0 while counting).</param>
/// <param name="Elapsed">Time since training began.</param>
public sealed record BpeTrainingProgress(string Phase, long Done, long Total, TimeSpan Elapsed);

/// <summary>
/// Trains a byte-level BPE vocabulary (GPT-2 style) over a text column of any <see cref="IDataView"/>, streaming it
/// once. Microsoft.ML.Tokenizers has no trainer, so this is ours: the corpus is split with GPT-2's regex and each
/// distinct piece counted; then the most frequent adjacent pair is merged, repeatedly, updating only the words that
/// hold it (pair counts kept incrementally, a heap with lazy deletion picks the next pair), as Hugging Face's trainer
/// does. Ties go to the pair with the smaller ids, so the result depends only on the input.
/// </summary>
public static class BpeTrainer
{
    /// <summary>Trains and returns the tokenizer (save it with <see cref="TextTokenizer.Save"/>).</summary>
    public static TextTokenizer Train(IDataView data, BpeTrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(options);
        int baseSize = options.SpecialTokens.Count + 256;
        if (options.VocabSize < baseSize)
            throw new ArgumentOutOfRangeException(nameof(options), $"VocabSize {options.VocabSize} is below the {baseSize} ids that special tokens and the 256 bytes take.");
        if (options.SpecialTokens.Distinct().Count() != options.SpecialTokens.Count)
            throw new ArgumentException("Special tokens must be distinct.", nameof(options));
        if (options.SpecialTokens.Any(t => t.Length < 2))
            throw new ArgumentException("Special tokens must be at least two characters (single characters are byte tokens).", nameof(options));
        if (options.MinPairFrequency < 1) throw new ArgumentOutOfRangeException(nameof(options), "MinPairFrequency must be at least 1.");
        var column = data.Schema.GetColumnOrNull(options.TextColumn) ?? throw new ArgumentOutOfRangeException(nameof(options),
            $"The training data has no column '{options.TextColumn}'. Columns: {DataViews.SchemaShapes.Names(data.Schema)}.");
        if (column.Type is not TextDataViewType)
            throw new ArgumentOutOfRangeException(nameof(options), $"Column '{options.TextColumn}' is {column.Type}; BPE training needs text.");

        var clock = Stopwatch.StartNew();
        var pieces = CountPieces(data, column, options, clock);
        var merges = new Merger(pieces, options.SpecialTokens.Count).Run(options.VocabSize - baseSize, options.MinPairFrequency, options.Progress, clock);

        var tokens = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int i = 0; i < options.SpecialTokens.Count; i++) tokens[options.SpecialTokens[i]] = i;
        var bytesOf = new List<byte[]>();
        for (int b = 0; b < 256; b++)
        {
            tokens[ByteLevel.ByteToChar[b].ToString()] = baseSize - 256 + b;
            bytesOf.Add([(byte)b]);
        }
        string Spell(int id) => ByteLevel.Encode(bytesOf[id - options.SpecialTokens.Count]);
        var mergeList = new List<(string, string)>();
        foreach (var (left, right, result) in merges)
        {
            bytesOf.Add([.. bytesOf[left - options.SpecialTokens.Count], .. bytesOf[right - options.SpecialTokens.Count]]);
            // Each merge makes a new byte string when merges are applied consistently; a repeat would mean a bug here.
            if (!tokens.TryAdd(Spell(result), result))
                throw new InvalidOperationException($"BPE training produced the token '{Spell(result)}' twice (merge {mergeList.Count + 1}).");
            mergeList.Add((Spell(left), Spell(right)));
        }
        var special = options.SpecialTokens.Select((t, i) => new AddedToken(t, i)).ToList();
        return TextTokenizer.FromVocabulary(new BpeVocabulary(tokens, mergeList, special, $"BPE trained on column '{options.TextColumn}'"));
    }

    static Dictionary<string, long> CountPieces(IDataView data, DataViewSchema.Column column, BpeTrainerOptions options, Stopwatch clock)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        var lookup = counts.GetAlternateLookup<ReadOnlySpan<char>>();
        var regex = ByteLevel.Gpt2Regex();
        // Special tokens are matched whole when encoding, so they are cut out of the text, never learned.
        var specials = options.SpecialTokens.OrderByDescending(t => t.Length).ToArray();
        using var cursor = data.GetRowCursor([column]);
        var getter = cursor.GetGetter<ReadOnlyMemory<char>>(column);
        ReadOnlyMemory<char> text = default;
        long documents = 0;
        while (cursor.MoveNext())
        {
            getter(ref text);
            ReadOnlySpan<char> rest = text.Span;
            while (!rest.IsEmpty)
            {
                int cut = rest.Length, skip = 0;
                foreach (string special in specials)
                {
                    int at = rest.IndexOf(special, StringComparison.Ordinal);
                    if (at >= 0 && at < cut) (cut, skip) = (at, special.Length);
                }
                var span = rest[..cut];
                foreach (var match in regex.EnumerateMatches(span))
                    CollectionsMarshal.GetValueRefOrAddDefault(lookup, span.Slice(match.Index, match.Length), out _)++;
                rest = rest[(cut + skip)..];
            }
            if (++documents % 10_000 == 0) options.Progress?.Report(new BpeTrainingProgress("counting", documents, 0, clock.Elapsed));
        }
        options.Progress?.Report(new BpeTrainingProgress("counting", documents, 0, clock.Elapsed));
        if (counts.Count == 0) throw new InvalidDataException($"Column '{column.Name}' holds no text to train on.");
        return counts;
    }

    /// <summary>The merge loop over distinct pieces (words) as id sequences, weighted by their counts.</summary>
    sealed class Merger
    {
        readonly int[][] _words;
        readonly int[] _lengths;
        readonly long[] _weights;
        readonly Dictionary<long, long> _pairCounts = new();
        readonly Dictionary<long, List<int>> _pairWords = new();
        readonly PriorityQueue<long, (long Count, long Pair)> _heap = new(Comparer<(long Count, long Pair)>.Create(
            (x, y) => x.Count != y.Count ? y.Count.CompareTo(x.Count) : x.Pair.CompareTo(y.Pair)));
        readonly int _firstByteId;
        int[] _visited;

        public Merger(Dictionary<string, long> pieces, int specialCount)
        {
            _firstByteId = specialCount;
            _words = new int[pieces.Count][];
            _lengths = new int[pieces.Count];
            _weights = new long[pieces.Count];
            _visited = new int[pieces.Count];
            int w = 0;
            byte[] buffer = new byte[256];
            foreach (var (piece, count) in pieces)
            {
                int n = Encoding.UTF8.GetMaxByteCount(piece.Length);
                if (n > buffer.Length) buffer = new byte[n];
                int length = Encoding.UTF8.GetBytes(piece, buffer);
                var ids = new int[length];
                for (int i = 0; i < length; i++) ids[i] = _firstByteId + buffer[i];
                _words[w] = ids;
                _lengths[w] = length;
                _weights[w] = count;
                for (int i = 0; i + 1 < length; i++) Add(Key(ids[i], ids[i + 1]), count, w);
                w++;
            }
            foreach (var (pair, count) in _pairCounts) _heap.Enqueue(pair, (count, pair));
        }

        public List<(int Left, int Right, int Result)> Run(int mergesWanted, int minFrequency, IProgress<BpeTrainingProgress>? progress, Stopwatch clock)
        {
            var merges = new List<(int, int, int)>(mergesWanted);
            var resultOf = new Dictionary<(int, int), int>();
            var touched = new HashSet<long>();
            int nextId = _firstByteId + 256;
            while (merges.Count < mergesWanted && _heap.TryDequeue(out long pair, out var priority))
            {
                long count = _pairCounts.GetValueOrDefault(pair);
                if (count != priority.Count)
                {
                    if (count > 0) _heap.Enqueue(pair, (count, pair)); // stale entry: requeue at its current count
                    continue;
                }
                if (count < minFrequency) break;
                int left = (int)(pair >> 32), right = (int)pair;
                int result = nextId++;
                merges.Add((left, right, result));
                touched.Clear();
                int stamp = merges.Count;
                foreach (int w in _pairWords[pair])
                {
                    if (_visited[w] == stamp) continue;
                    _visited[w] = stamp;
                    MergeInWord(w, left, right, result, touched);
                }
                _pairCounts.Remove(pair);
                _pairWords.Remove(pair);
                foreach (long changed in touched)
                    if (_pairCounts.TryGetValue(changed, out long c) && c > 0) _heap.Enqueue(changed, (c, changed));
                if (merges.Count % 500 == 0) progress?.Report(new BpeTrainingProgress("merging", merges.Count, mergesWanted, clock.Elapsed));
            }
            progress?.Report(new BpeTrainingProgress("merging", merges.Count, mergesWanted, clock.Elapsed));
            return merges;
        }

        // Rewrites one word with every occurrence of (left, right) replaced by result, adjusting the pair counts of
        // the neighbours. Successive occurrences (a b a b) come out right because the left neighbour is read from
        // the already-rewritten part.
        void MergeInWord(int w, int left, int right, int result, HashSet<long> touched)
        {
            int[] s = _words[w];
            int length = _lengths[w];
            long weight = _weights[w];
            int write = 0;
            for (int read = 0; read < length;)
            {
                if (read + 1 < length && s[read] == left && s[read + 1] == right)
                {
                    if (write > 0)
                    {
                        Add(Key(s[write - 1], left), -weight, -1);
                        long k = Key(s[write - 1], result);
                        Add(k, weight, w);
                        touched.Add(k);
                    }
                    if (read + 2 < length)
                    {
                        Add(Key(right, s[read + 2]), -weight, -1);
                        long k = Key(result, s[read + 2]);
                        Add(k, weight, w);
                        touched.Add(k);
                    }
                    s[write++] = result;
                    read += 2;
                }
                else s[write++] = s[read++];
            }
            _lengths[w] = write;
        }

        void Add(long pair, long delta, int word)
        {
            ref long count = ref CollectionsMarshal.GetValueRefOrAddDefault(_pairCounts, pair, out _);
            count += delta;
            if (word >= 0)
            {
                ref List<int>? words = ref CollectionsMarshal.GetValueRefOrAddDefault(_pairWords, pair, out _);
                words ??= [];
                if (words.Count == 0 || words[^1] != word) words.Add(word);
            }
        }

        static long Key(int left, int right) => (long)left << 32 | (uint)right;
    }
}
