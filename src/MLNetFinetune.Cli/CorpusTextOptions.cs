using System.CommandLine;
using MLNetFinetune.Data;

namespace MLNetFinetune.Cli;

/// <summary>
/// <c>--text-field</c> and <c>--text-mode</c>: where a verb that reads a corpus finds its documents, mapped onto
/// <see cref="CorpusOptions"/>. Every verb that reads a corpus takes them.
/// </summary>
sealed class CorpusTextOptions(string textFieldDescription = "JSON field holding the text.")
{
    public readonly Option<string> TextField = new("--text-field") { Description = textFieldDescription, DefaultValueFactory = _ => "text" };

    public readonly Option<TextDocumentMode> TextMode = new("--text-mode") { Description = "How .txt files are cut into documents.", DefaultValueFactory = _ => TextDocumentMode.File };

    public IEnumerable<Option> All => [TextField, TextMode];

    /// <summary>The corpus at <paramref name="path"/> read as the options say.</summary>
    public CorpusOptions For(ParseResult result, string path) =>
        new() { Path = path, TextField = result.GetValue(TextField)!, TextMode = result.GetValue(TextMode) };
}
