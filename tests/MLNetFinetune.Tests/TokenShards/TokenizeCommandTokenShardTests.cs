using MLNetFinetune.Distributed;
using MLNetFinetune.Tests.Cli;
using MLNetFinetune.TokenShards;

namespace MLNetFinetune.Tests.TokenShards;

public class TokenizeCommandTokenShardTests(ShardCorpus corpus) : IClassFixture<ShardCorpus>
{
    [Fact]
    public void TokenizeWritesShardsAndManifestThenSkipsThemOnARerun()
    {
        string output = corpus.NewFolder("cli");
        string[] args = ["tokenize", "--corpus", corpus.Folder, "--tokenizer", RepoPaths.Of("models", "facts-base"), "--out", output, "--dtype", "int32"];
        var (code, stdout, stderr) = CliRunner.Run(args);

        Assert.True(code == 0, stderr);
        Assert.Contains("4 shards written, 0 skipped", stdout);
        Assert.Contains($"manifest: 4 shards, {corpus.Expected.Sum(s => s.Length):N0} documents, {corpus.AllIds.Length:N0} int32 tokens", stdout);
        Assert.Contains("tokenize: shard 4/4 (d.txt)", stdout);
        var manifest = TokenShardManifest.Read(output);
        Assert.Equal("int32", manifest.DType);
        Assert.Equal(new TokenShardTokenizer(ShardCorpus.Tokenizer.Source, 2048, 0), manifest.Tokenizer);

        var rerun = CliRunner.Run(args);
        Assert.True(rerun.Code == 0, rerun.Err);
        Assert.Contains("0 shards written, 4 skipped", rerun.Out);
    }

    [Fact]
    public void LaunchersAreReadInOrderOfPrecedence()
    {
        static LaunchInfo Detect(params (string Name, string Value)[] variables) =>
            LaunchEnvironment.Detect(name => variables.FirstOrDefault(v => v.Name == name).Value);

        Assert.Equal(new LaunchInfo("none", 0, 1, 0), Detect());
        Assert.Equal(new LaunchInfo("torchrun", 3, 8, 1), Detect(("RANK", "3"), ("WORLD_SIZE", "8"), ("LOCAL_RANK", "1")));
        Assert.Equal(new LaunchInfo("Slurm", 5, 6, 5), Detect(("SLURM_PROCID", "5"), ("SLURM_NTASKS", "6"), ("RANK", "0"), ("WORLD_SIZE", "1")));
        // mpirun inside a Slurm allocation: Open MPI's own variables win.
        Assert.Equal(new LaunchInfo("Open MPI", 1, 2, 1),
            Detect(("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")));
        Assert.Equal(new LaunchInfo("MPICH (PMI)", 2, 4, 0), Detect(("PMI_RANK", "2"), ("PMI_SIZE", "4"), ("MPI_LOCALRANKID", "0")));
        Assert.Contains("PMI_RANK=4 is not a rank of PMI_SIZE=4", Assert.Throws<InvalidOperationException>(() => Detect(("PMI_RANK", "4"), ("PMI_SIZE", "4"))).Message);
        Assert.Contains("RANK='x'", Assert.Throws<InvalidOperationException>(() => Detect(("RANK", "x"), ("WORLD_SIZE", "2"))).Message);
    }
}
