using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using MLNetFinetune.Tests.Server;

namespace MLNetFinetune.Tests.Cli;

/// <summary><c>mlnet-finetune serve</c> as users run it: a process that says where it listens, wants its key, and on SIGTERM lets requests in flight finish.</summary>
[Collection(TorchCollection.Name)]
public class ServeProcessTests(ExportedTinyModel exported) : IClassFixture<ExportedTinyModel>
{
    [Fact]
    public async Task ServesUntilSigtermThenFinishesTheRequestInFlightAndExitsCleanly()
    {
        var start = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "mlnet-finetune.dll"), "serve", exported.Folder, "--port", "0",
            "--provider", "cpu", "--threads", "1", "--api-key-env", "MLNETFT_TEST_KEY"])
        {
            RedirectStandardOutput = true, RedirectStandardError = true,
            Environment = { ["MLNETFT_TEST_KEY"] = "sk-test" },
        };
        using var server = Process.Start(start)!;
        var errors = new StringBuilder();
        server.ErrorDataReceived += (_, e) => errors.AppendLine(e.Data);
        server.BeginErrorReadLine();
        try
        {
            string? line = await server.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            Assert.True(line != null, $"the server exited before listening: {errors}");
            Assert.Matches(@"^listening on http://127\.0\.0\.1:\d+$", line);
            Assert.Equal("serving 'served' on CPU", await server.StandardOutput.ReadLineAsync());

            using var http = new HttpClient { BaseAddress = new Uri(line!["listening on ".Length..]), Timeout = TimeSpan.FromSeconds(60) };
            Assert.Equal(HttpStatusCode.Unauthorized, (await http.GetAsync("/v1/models")).StatusCode);
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "sk-test");
            Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/v1/models")).StatusCode);

            var inFlight = http.PostAsync("/v1/completions", new StringContent("""{"model": "served", "prompt": "a", "max_tokens": 150, "ignore_eos": true}""", Encoding.UTF8, "application/json"));
            var clock = Stopwatch.StartNew();
            while ((int)JsonNode.Parse(await http.GetStringAsync("/health"))!["running"]! == 0 && clock.Elapsed < TimeSpan.FromSeconds(20)) await Task.Delay(5);
            Process.Start("kill", ["-TERM", server.Id.ToString()])!.WaitForExit();

            var answered = await inFlight;
            Assert.Equal(HttpStatusCode.OK, answered.StatusCode);
            Assert.Equal(150, (int)JsonNode.Parse(await answered.Content.ReadAsStringAsync())!["usage"]!["completion_tokens"]!);
            Assert.True(server.WaitForExit(TimeSpan.FromSeconds(30)), "the server did not exit after SIGTERM");
            Assert.Equal(0, server.ExitCode);
            Assert.Equal("stopped", (await server.StandardOutput.ReadToEndAsync()).Trim());
        }
        finally
        {
            if (!server.HasExited) server.Kill(entireProcessTree: true);
        }
    }
}
