namespace MLNetFinetune.Server;

/// <summary>How <see cref="OpenAIServer"/> serves an exported folder.</summary>
public sealed class ServerOptions
{
    /// <summary>The exported folder (model.onnx, genai_config.json, tokenizer; its chat template or prompt format).</summary>
    public required string Folder { get; init; }

    /// <summary>Address to bind; loopback unless told otherwise (<c>0.0.0.0</c> listens on every interface).</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>Port; 0 takes a free one (<see cref="OpenAIServer.Address"/> says which).</summary>
    public int Port { get; init; } = 8000;

    /// <summary>When set, every <c>/v1</c> request needs <c>Authorization: Bearer</c> this key.</summary>
    public string? ApiKey { get; init; }

    /// <summary>The model's id in requests and <c>/v1/models</c>; default the folder's name.</summary>
    public string? ModelName { get; init; }

    /// <summary>Most requests decoded together in one batch; more wait to join.</summary>
    public int MaxBatch { get; init; } = 32;

    /// <summary>Most requests in flight (running and waiting); more get 429.</summary>
    public int MaxConcurrent { get; init; } = 128;

    /// <summary>ONNX Runtime execution provider: auto, cpu or cuda.</summary>
    public string Provider { get; init; } = "auto";

    /// <summary>ONNX Runtime's intra-op threads on CPU; 0 keeps its default (one per physical core).</summary>
    public int Threads { get; init; }

    /// <summary>How long a shutdown waits for requests in flight to finish.</summary>
    public TimeSpan ShutdownTimeout { get; init; } = TimeSpan.FromSeconds(30);
}
