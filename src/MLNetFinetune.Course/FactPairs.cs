using System.Globalization;
using Microsoft.Data.Analysis;
using Microsoft.ML;
using MLNetFinetune.Data;

namespace MLNetFinetune.Course;

/// <summary>The bundled facts folder's pairs as both lessons read them, and the lessons' section headings.</summary>
static class FactPairs
{
    /// <summary><c>train.jsonl</c> and <c>heldout.jsonl</c> of <paramref name="folder"/>, with the fields the lessons group and probe by.</summary>
    public static (DataFrame Train, DataFrame HeldOut) Load(MLContext ml, string folder)
    {
        var load = new InstructionDataOptions { ExtraFields = ["kind", "domain", "entity", "attribute", "cloze"] };
        return (ml.Data.LoadInstructionData(Path.Combine(folder, "train.jsonl"), load), ml.Data.LoadInstructionData(Path.Combine(folder, "heldout.jsonl"), load));
    }

    /// <summary>The rows of one kind (<c>extraction</c> or <c>recall</c>), the first <paramref name="max"/> of them (0: all).</summary>
    public static DataFrame OfKind(DataFrame pairs, string kind, int max = 0)
    {
        var rows = pairs.Filter(((StringDataFrameColumn)pairs["kind"]).ElementwiseEquals(kind));
        return max > 0 ? rows.Head(Math.Min(max, (int)rows.Rows.Count)) : rows;
    }

    public static void Heading(TextWriter output, string title) => output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"\n=== {title} ==="));
}
