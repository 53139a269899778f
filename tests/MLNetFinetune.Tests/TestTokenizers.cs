using Microsoft.Data.Analysis;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.Tests;

/// <summary>Small byte-level BPE tokenizers for model tests, trained on the bundled documentation pairs (and any extra text).</summary>
public static class TestTokenizers
{
    public static TextTokenizer Small(int vocabSize = 320, params string[] extraText) => BpeTrainer.Train(
        new DataFrame(new StringDataFrameColumn("Text", [File.ReadAllText(RepoPaths.Of("examples", "data", "mlnet_finetune_docs.jsonl")), .. extraText])),
        new BpeTrainerOptions { VocabSize = vocabSize });
}
