using System.CommandLine;
using MLNetFinetune.Data;

namespace MLNetFinetune.Cli;

/// <summary>
/// <c>--field-map q=question,a=answer</c>: reads a pairs file whose fields have other names, mapped onto
/// <see cref="InstructionDataOptions.FieldMap"/> (file field = layout field). Every verb that reads pairs takes it.
/// </summary>
static class FieldMapOption
{
    public static Option<string?> Create() => new("--field-map")
    {
        Description = "Rename the pairs file's fields to the layout's: file=layout, comma-separated (e.g. q=question,a=answer).",
    };

    /// <summary>The loader options for a pairs file read with <paramref name="option"/>'s value.</summary>
    public static InstructionDataOptions Options(ParseResult result, Option<string?> option, IReadOnlyList<string>? extraFields = null) =>
        new() { FieldMap = Parse(result.GetValue(option)), ExtraFields = extraFields ?? [] };

    /// <summary>Parses <c>from=to,from=to</c>; a bad item is an error that names it.</summary>
    public static IReadOnlyDictionary<string, string> Parse(string? text)
    {
        var map = new Dictionary<string, string>(StringComparer.Ordinal);
        if (text == null) return map;
        foreach (string item in text.Split(','))
        {
            string[] parts = item.Split('=');
            if (parts.Length != 2 || parts[0].Trim().Length == 0 || parts[1].Trim().Length == 0)
                throw new ArgumentException($"--field-map: '{item}' is not file_field=layout_field (e.g. --field-map q=question,a=answer).");
            string from = parts[0].Trim(), to = parts[1].Trim();
            if (map.ContainsKey(from)) throw new ArgumentException($"--field-map: '{item}' maps field '{from}' a second time.");
            if (map.ContainsValue(to)) throw new ArgumentException($"--field-map: '{item}' maps a second field onto '{to}'.");
            map[from] = to;
        }
        return map;
    }
}
