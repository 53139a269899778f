using System.Text.Json.Nodes;
using MLNetFinetune.Data;
using MLNetFinetune.Tokenization;

namespace MLNetFinetune.ModelFiles;

/// <summary>
/// A model directory in the Hugging Face layout: <c>config.json</c>, <c>model.safetensors</c>, the tokenizer files and
/// <c>generation_config.json</c>; the weights in one file or in shards (<see cref="SafeTensorsCheckpoint"/>). A downloaded
/// Pythia, SmolLM2 or Qwen2.5 folder is one; so is every model this project saves.
/// </summary>
public static class ModelDirectory
{
    /// <summary>File names.</summary>
    public const string ConfigFile = "config.json", WeightsFile = "model.safetensors", GenerationConfigFile = "generation_config.json";

    /// <summary>The path of a file in a model directory.</summary>
    public static string PathOf(string directory, string file) => Path.Combine(directory, file);

    /// <summary>Reads the config and the tokenizer and checks they agree (every token id has an embedding row).</summary>
    public static (ModelConfig Config, TextTokenizer Tokenizer) ReadConfigAndTokenizer(string directory)
    {
        if (!Directory.Exists(directory)) throw new DirectoryNotFoundException($"Model directory '{directory}' does not exist.");
        string configPath = PathOf(directory, ConfigFile);
        var config = ModelConfig.Load(configPath);
        TextTokenizer tokenizer;
        try
        {
            tokenizer = TextTokenizer.Load(directory);
        }
        catch (FileNotFoundException e)
        {
            throw new FileNotFoundException($"Model directory '{directory}' has no tokenizer: {e.Message}", e.FileName, e);
        }
        tokenizer.CheckFits(config.VocabSize, configPath);
        if (!SafeTensorsCheckpoint.Exists(directory))
        {
            string hint = File.Exists(PathOf(directory, "pytorch_model.bin")) || File.Exists(PathOf(directory, "pytorch_model.bin.index.json"))
                ? " It has pytorch_model.bin (pickle), which is never read (loading a pickle can run code): convert it to safetensors, e.g. " +
                  "with transformers: AutoModelForCausalLM.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)."
                : "";
            throw new FileNotFoundException($"Model directory '{directory}' has no {WeightsFile} (nor {SafeTensorsCheckpoint.IndexFile}).{hint}", PathOf(directory, WeightsFile));
        }
        return (config, tokenizer);
    }

    /// <summary>Writes config.json, the tokenizer files and generation_config.json (the weights are written by the training side).</summary>
    public static void WriteConfigAndTokenizer(string directory, ModelConfig config, TextTokenizer tokenizer, int maxNewTokens = 100)
    {
        Directory.CreateDirectory(directory);
        tokenizer.CheckFits(config.VocabSize, "the model config");
        config.Save(PathOf(directory, ConfigFile));
        tokenizer.Save(directory);
        var generation = new JsonObject
        {
            ["bos_token_id"] = config.BosTokenId,
            ["eos_token_id"] = config.ToJson()["eos_token_id"]?.DeepClone(),
            ["pad_token_id"] = tokenizer.PadId,
            ["max_new_tokens"] = maxNewTokens,
            ["do_sample"] = false,
        };
        DataFiles.WriteJson(PathOf(directory, GenerationConfigFile), generation);
    }
}
