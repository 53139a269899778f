namespace MLNetFinetune.Data;

/// <summary>How a plain-text file is cut into documents.</summary>
public enum TextDocumentMode
{
    /// <summary>Each file is one document.</summary>
    File,
    /// <summary>Each non-blank line is one document.</summary>
    Line,
    /// <summary>Each run of non-blank lines, separated by blank lines, is one document.</summary>
    Paragraph,
}

/// <summary>Options for streaming a pretraining corpus (the Pile, C4, or your own text) as an <see cref="Microsoft.ML.IDataView"/>.</summary>
public sealed class CorpusOptions
{
    /// <summary>File extensions a corpus folder is searched for (compressed variants included).</summary>
    public static readonly IReadOnlyList<string> SupportedExtensions =
        [".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".json.gz", ".json.zst", ".txt", ".txt.gz", ".txt.zst"];

    /// <summary>
    /// A file, a folder (searched recursively for <see cref="SupportedExtensions"/>) or a glob
    /// (<c>pile/*.jsonl.zst</c>, <c>c4/**/*.json.gz</c>). JSON files hold one object per line (JSON Lines), as the Pile and C4 ship them.
    /// </summary>
    public required string Path { get; init; }

    /// <summary>The JSON field holding a document's text; dotted paths reach nested fields. Default <c>text</c>.</summary>
    public string TextField { get; init; } = "text";

    /// <summary>
    /// JSON fields to expose as extra text columns, by dotted path: <c>meta.pile_set_name</c> (the Pile), <c>url</c>,
    /// <c>timestamp</c> (C4). Write <c>column=path</c> to choose the column name; otherwise the path is the name.
    /// Non-string values appear as their JSON text; missing ones as empty text.
    /// </summary>
    public IReadOnlyList<string> MetadataFields { get; init; } = [];

    /// <summary>The name of the output text column. Default <c>Text</c>.</summary>
    public string TextColumnName { get; init; } = "Text";

    /// <summary>How <c>.txt</c> files are cut into documents. Default: one document per file.</summary>
    public TextDocumentMode TextMode { get; init; } = TextDocumentMode.File;

    /// <summary>
    /// The longest record accepted, in bytes: a JSON line, a text line, a paragraph or a whole text file.
    /// Anything longer fails instead of exhausting memory. Default 64 MiB.
    /// </summary>
    public int MaxRecordBytes { get; init; } = 64 << 20;

    /// <summary>Malformed JSON, a missing or non-string text field, or empty text: fail (default) or skip and count.</summary>
    public BadRecordPolicy OnBadRecord { get; init; } = BadRecordPolicy.Fail;

    /// <summary>Receives the report of each completed pass (documents read, records skipped).</summary>
    public IProgress<DataLoadReport>? Progress { get; init; }
}
