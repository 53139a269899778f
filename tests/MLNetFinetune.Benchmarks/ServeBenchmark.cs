using System.Diagnostics;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using MLNetFinetune.ModelFiles;
using MLNetFinetune.TorchSharp.Modeling;
using static TorchSharp.torch;

namespace MLNetFinetune.Benchmarks;

/// <summary>
/// The OpenAI-compatible server under load: `mlnet-finetune serve` (a child process, as users run it) on the
/// pythia-70m shape (random weights, CPU), and 1, 8 and 32 concurrent clients, each sending chat requests one after
/// another (a 24-word prompt, 128 new tokens with <c>ignore_eos</c>, greedy), as vLLM's benchmark_serving does. Reports
/// generated tokens/s over the whole run of each level, request latency p50/p99, and the server's RSS (peak and after).
/// Options: --clients 1,8,32, --new N (128), --requests N (per client, 3), --threads N (the server's; default all cores).
/// </summary>
static class ServeBenchmark
{
    public static async Task<int> RunAsync(string[] args)
    {
        int newTokens = BenchmarkArgs.Int(args, "--new", 128), perClient = BenchmarkArgs.Int(args, "--requests", 3);
        int threads = BenchmarkArgs.Int(args, "--threads", Environment.ProcessorCount);
        int[] levels = (BenchmarkArgs.Value(args, "--clients") ?? "1,8,32").Split(',').Select(int.Parse).ToArray();
        string dir = Path.Combine(BenchmarkArgs.TempDir(args), "generate-pythia-70m");
        string folder;
        manual_seed(0);
        using (var model = new TransformerForCausalLM(ModelConfig.Preset("pythia-70m"))) folder = GenerateBenchmark.SaveAndExport(model, dir);

        string cli = Path.Combine(AppContext.BaseDirectory, "mlnet-finetune.dll");
        var start = new ProcessStartInfo("dotnet", ["exec", cli, "serve", folder, "--port", "0", "--provider", "cpu", "--threads", threads.ToString(),
            "--max-batch", levels.Max().ToString(), "--max-concurrent", (4 * levels.Max()).ToString()])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var server = Process.Start(start)!;
        server.ErrorDataReceived += (_, e) => { if (e.Data != null) Console.Error.WriteLine($"server: {e.Data}"); };
        server.BeginErrorReadLine();
        try
        {
            Uri address = await ListeningAddress(server);
            Console.WriteLine($"server pid {server.Id} on {address}, pythia-70m shape, {threads} threads; {newTokens} new tokens per request");
            using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromMinutes(10) };
            await Request(http, 0, 8); // warm-up: session, allocator, JIT
            double idleRss = ProcessMemory.RssMb(server.Id);

            var results = new List<JsonObject>();
            double peak = 0;
            foreach (int clients in levels)
            {
                var latencies = new List<double>();
                long tokens = 0;
                using var sampling = new CancellationTokenSource();
                var rssSampler = Task.Run(async () =>
                {
                    while (!sampling.IsCancellationRequested) { peak = Math.Max(peak, ProcessMemory.RssMb(server.Id)); await Task.Delay(50); }
                });
                var clock = Stopwatch.StartNew();
                await Task.WhenAll(Enumerable.Range(0, clients).Select(async c =>
                {
                    for (int r = 0; r < perClient; r++)
                    {
                        var timer = Stopwatch.StartNew();
                        int generated = await Request(http, c * perClient + r, newTokens);
                        lock (latencies) { latencies.Add(timer.Elapsed.TotalMilliseconds); tokens += generated; }
                    }
                }));
                double seconds = clock.Elapsed.TotalSeconds;
                sampling.Cancel();
                await rssSampler;
                latencies.Sort();
                var level = new JsonObject
                {
                    ["clients"] = clients, ["requests"] = latencies.Count, ["tokens"] = tokens, ["seconds"] = Math.Round(seconds, 2),
                    ["tokens_per_s"] = Math.Round(tokens / seconds, 1),
                    ["p50_ms"] = Math.Round(Percentile(latencies, 0.50)), ["p99_ms"] = Math.Round(Percentile(latencies, 0.99)),
                };
                results.Add(level);
                Console.WriteLine($"{clients,3} clients: {level["tokens_per_s"]} tokens/s, latency p50 {level["p50_ms"]} ms, p99 {level["p99_ms"]} ms ({latencies.Count} requests)");
            }
            double first = (double)results[0]["tokens_per_s"]!, lastRate = (double)results[^1]["tokens_per_s"]!;
            var summary = new JsonObject
            {
                ["benchmark"] = "serve", ["shape"] = "pythia-70m", ["threads"] = threads, ["new_tokens"] = newTokens,
                ["levels"] = new JsonArray([.. results]),
                [$"ratio_{levels[^1]}_to_{levels[0]}"] = Math.Round(lastRate / first, 2),
                ["rss_idle_mb"] = Math.Round(idleRss), ["rss_peak_mb"] = Math.Round(Math.Max(peak, ProcessMemory.PeakRssMb(server.Id))),
            };
            Console.WriteLine(summary.ToJsonString());
            return 0;
        }
        finally
        {
            if (!server.HasExited) server.Kill(entireProcessTree: true);
        }
    }

    // The server prints "listening on http://HOST:PORT" when it is ready.
    static async Task<Uri> ListeningAddress(Process server)
    {
        while (await server.StandardOutput.ReadLineAsync() is { } line)
            if (line.StartsWith("listening on ", StringComparison.Ordinal)) return new Uri(line["listening on ".Length..]);
        throw new InvalidOperationException("the server exited before listening (its errors are above).");
    }

    // One chat request; returns the completion tokens the server reports.
    static async Task<int> Request(HttpClient http, int index, int newTokens)
    {
        string prompt = $"Request {index}: " + string.Join(' ', Enumerable.Range(0, 24).Select(i => (char)('a' + (index * 7 + i * 3) % 26) + "x"));
        var body = new JsonObject
        {
            ["model"] = "onnx", ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt }),
            ["max_tokens"] = newTokens, ["temperature"] = 0, ["ignore_eos"] = true,
        };
        using var response = await http.PostAsJsonAsync("/v1/chat/completions", body);
        string text = await response.Content.ReadAsStringAsync();
        if (!response.IsSuccessStatusCode) throw new InvalidOperationException($"{(int)response.StatusCode}: {text}");
        return (int)JsonNode.Parse(text)!["usage"]!["completion_tokens"]!;
    }

    static double Percentile(List<double> sorted, double p) => sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p * sorted.Count) - 1)];
}
