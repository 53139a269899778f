using System.Diagnostics;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using MLNetFinetune.Data;
using MLNetFinetune.TokenShards;

namespace MLNetFinetune.Tests.TokenShards;

public class TokenShardTests(ShardCorpus corpus) : IClassFixture<ShardCorpus>
{
    TokenShardRunReport Tokenize(string output, TokenDType? dtype = null, int rank = 0, int world = 1, int threads = 0, int batch = 256) =>
        TokenShardWriter.Write(new TokenShardOptions
        {
            Corpus = new CorpusOptions { Path = corpus.Folder },
            Tokenizer = ShardCorpus.Tokenizer,
            OutputDirectory = output,
            DType = dtype,
            Rank = rank,
            WorldSize = world,
            Threads = threads,
            BatchDocuments = batch,
        });

    [Theory]
    [InlineData(TokenDType.UInt16)]
    [InlineData(TokenDType.Int32)]
    public void IdsRoundTripThroughBinAndIdx(TokenDType dtype)
    {
        string output = corpus.NewFolder($"roundtrip-{dtype}");
        var report = Tokenize(output, dtype);

        Assert.Equal(["a", "b", "c", "d"], report.Shards.Select(s => s.Info.Name));
        for (int s = 0; s < corpus.Inputs.Count; s++)
        {
            var expected = corpus.Expected[s];
            using var reader = IndexedDatasetReader.Open(Path.Combine(output, report.Shards[s].Info.Name));
            Assert.Equal(dtype, reader.DType);
            Assert.Equal(expected.Length, reader.DocumentCount);
            Assert.Equal(expected.Length, reader.SequenceCount);
            Assert.Equal(expected.Sum(d => d.Length), reader.TokenCount);
            for (int d = 0; d < expected.Length; d++) Assert.Equal(expected[d], reader.ReadSequence(d));
            Assert.Equal(reader.TokenCount * dtype.Size(), new FileInfo(reader.BinPath).Length);
            Assert.Equal(34 + 12L * expected.Length + 8L * (expected.Length + 1), new FileInfo(reader.IdxPath).Length);
        }
        Assert.Equal(12, corpus.Expected[0].Length); // the Pile-style sample's documents, each one sequence
        Assert.Equal(TokenDType.UInt16, TokenDTypes.BestFitting(ShardCorpus.Tokenizer.VocabSize));
    }

    [PythonTheory("numpy")]
    [InlineData(TokenDType.UInt16)]
    [InlineData(TokenDType.Int32)]
    public void NumpyReadsTheShardsAsMegatronAndNanoGptDo(TokenDType dtype)
    {
        string output = corpus.NewFolder($"numpy-{dtype}");
        Tokenize(output, dtype);
        // The index parsed as Megatron's _IndexReader does (struct header, numpy.frombuffer arrays); the tokens read as
        // nanoGPT reads its train.bin (numpy.memmap), cut by the pointers and lengths.
        string script = """
            import json, struct, sys
            import numpy
            DTYPES = {1: numpy.uint8, 2: numpy.int8, 3: numpy.int16, 4: numpy.int32, 5: numpy.int64, 6: numpy.float64, 7: numpy.float32, 8: numpy.uint16}
            result = []
            for prefix in sys.argv[1:]:
                with open(prefix + ".idx", "rb") as stream:
                    assert stream.read(9) == b"MMIDIDX\x00\x00"
                    assert struct.unpack("<Q", stream.read(8))[0] == 1
                    dtype = DTYPES[struct.unpack("<B", stream.read(1))[0]]
                    sequence_count = struct.unpack("<Q", stream.read(8))[0]
                    document_count = struct.unpack("<Q", stream.read(8))[0]
                    offset = stream.tell()
                buffer = memoryview(numpy.memmap(prefix + ".idx", mode="r", order="C"))
                lengths = numpy.frombuffer(buffer, dtype=numpy.int32, count=sequence_count, offset=offset)
                pointers = numpy.frombuffer(buffer, dtype=numpy.int64, count=sequence_count, offset=offset + lengths.nbytes)
                documents = numpy.frombuffer(buffer, dtype=numpy.int64, count=document_count, offset=offset + lengths.nbytes + pointers.nbytes)
                assert list(documents) == list(range(sequence_count + 1))
                data = numpy.memmap(prefix + ".bin", dtype=dtype, mode="r")
                size = numpy.dtype(dtype).itemsize
                result.append({"dtype": numpy.dtype(dtype).name, "sequences": [data[p // size : p // size + n].tolist() for p, n in zip(pointers, lengths)]})
            print(json.dumps(result))
            """;
        string path = Path.Combine(output, "read.py");
        File.WriteAllText(path, script);
        var psi = new ProcessStartInfo(DebianPython.Path, [path, .. new[] { "a", "b", "c", "d" }.Select(n => Path.Combine(output, n))])
        { RedirectStandardOutput = true, RedirectStandardError = true };
        using var python = Process.Start(psi)!;
        var stderr = python.StandardError.ReadToEndAsync();
        string stdout = python.StandardOutput.ReadToEnd();
        python.WaitForExit();
        Assert.True(python.ExitCode == 0, stderr.Result);

        using var json = JsonDocument.Parse(stdout);
        var shards = json.RootElement.EnumerateArray().ToArray();
        Assert.Equal(corpus.Inputs.Count, shards.Length);
        for (int s = 0; s < shards.Length; s++)
        {
            Assert.Equal(dtype.Name(), shards[s].GetProperty("dtype").GetString());
            var sequences = shards[s].GetProperty("sequences").EnumerateArray().Select(q => q.EnumerateArray().Select(t => t.GetInt32()).ToArray()).ToArray();
            Assert.Equal(corpus.Expected[s], sequences);
        }
    }

    [Fact]
    public void ARerunSkipsIntactShardsAndRedoesDamagedOrUnrecordedOnes()
    {
        string output = corpus.NewFolder("resume");
        var first = Tokenize(output);
        Assert.Equal((4, 0), (first.Written, first.Skipped));
        var original = Directory.GetFiles(output).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes);

        var second = Tokenize(output);
        Assert.Equal((0, 4), (second.Written, second.Skipped));
        Assert.Equal(first.Shards.Select(s => s.Info), second.Shards.Select(s => s.Info));

        // A flipped byte in b.bin (same size) and a lost sidecar for c: those two are redone, a and d kept.
        byte[] bin = File.ReadAllBytes(Path.Combine(output, "b.bin"));
        bin[10] ^= 0xFF;
        File.WriteAllBytes(Path.Combine(output, "b.bin"), bin);
        File.Delete(Path.Combine(output, "c" + TokenShardInfo.SidecarSuffix));
        var third = Tokenize(output);
        Assert.Equal([true, false, false, true], third.Shards.Select(s => s.Skipped));
        Assert.Equal(original, Directory.GetFiles(output).ToDictionary(f => Path.GetFileName(f), File.ReadAllBytes));

        // A changed input is redone too: its checksum no longer matches the sidecar.
        string changed = corpus.NewFolder("changed-input");
        Directory.CreateDirectory(changed);
        foreach (string input in corpus.Inputs) File.Copy(input, Path.Combine(changed, Path.GetFileName(input)));
        var copy = TokenShardWriter.Write(new TokenShardOptions { Corpus = new CorpusOptions { Path = changed }, Tokenizer = ShardCorpus.Tokenizer, OutputDirectory = output });
        Assert.All(copy.Shards, s => Assert.True(s.Skipped)); // same content elsewhere: still intact
        File.AppendAllText(Path.Combine(changed, "d.txt"), "\nOne more line.");
        var edited = TokenShardWriter.Write(new TokenShardOptions { Corpus = new CorpusOptions { Path = changed }, Tokenizer = ShardCorpus.Tokenizer, OutputDirectory = output });
        Assert.Equal([true, true, true, false], edited.Shards.Select(s => s.Skipped));
    }

    [Fact]
    public void RanksWriteDisjointShardsWhoseUnionIsTheSingleProcessRun()
    {
        string single = corpus.NewFolder("world1"), striped = corpus.NewFolder("world2");
        var whole = Tokenize(single);
        TokenShardManifest.Write(single, whole.Inputs);

        var rank0 = Tokenize(striped, rank: 0, world: 2);
        Assert.Equal(["a", "c"], rank0.Shards.Select(s => s.Info.Name));
        Assert.Equal(["a.bin", "a.idx", "a.shard.json", "c.bin", "c.idx", "c.shard.json"], Directory.GetFiles(striped).Select(Path.GetFileName).Order());
        var missing = Assert.Throws<IOException>(() => TokenShardManifest.Write(striped, rank0.Inputs));
        Assert.Contains("2 of 4 token shards are missing", missing.Message);
        Assert.Contains("b (from ", missing.Message);
        Assert.Contains("d (from ", missing.Message);

        var rank1 = Tokenize(striped, rank: 1, world: 2, threads: 1, batch: 7); // thread count and batch size do not change the bytes
        Assert.Equal(["b", "d"], rank1.Shards.Select(s => s.Info.Name));
        TokenShardManifest.Write(striped, rank0.Inputs);

        var files = Directory.GetFiles(single).Select(f => Path.GetFileName(f)).Order().ToArray();
        Assert.Equal(files, Directory.GetFiles(striped).Select(f => Path.GetFileName(f)).Order());
        foreach (string file in files) Assert.True(File.ReadAllBytes(Path.Combine(single, file)).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(striped, file))), file);
    }

    [Fact]
    public async Task RankZeroWaitingForAnotherRankFailsNamingTheMissingShards()
    {
        string output = corpus.NewFolder("wait");
        var rank0 = Tokenize(output, rank: 0, world: 2);
        var clock = Stopwatch.StartNew();
        var error = Assert.Throws<IOException>(() => TokenShardManifest.WaitAndWrite(output, rank0.Inputs, TimeSpan.FromMilliseconds(300), TimeSpan.FromMilliseconds(50)));
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.3, 5);
        Assert.Contains("after waiting", error.Message);
        Assert.Contains("b (from " + corpus.Inputs[1], error.Message);

        var late = Task.Run(async () => { await Task.Delay(200); Tokenize(output, rank: 1, world: 2); });
        var manifest = TokenShardManifest.WaitAndWrite(output, rank0.Inputs, TimeSpan.FromSeconds(30), TimeSpan.FromMilliseconds(50));
        await late;
        Assert.Equal(["a", "b", "c", "d"], manifest.Shards.Select(s => s.Name));
        Assert.Equal(corpus.AllIds.Length, manifest.Tokens);
    }

    [Fact]
    public void DamagedFilesAndMisplacedOutputFailNamingTheFile()
    {
        string output = corpus.NewFolder("damaged");
        Tokenize(output);
        string idx = Path.Combine(output, "b.idx"), bin = Path.Combine(output, "c.bin");

        byte[] bytes = File.ReadAllBytes(idx);
        bytes[0] = (byte)'X';
        File.WriteAllBytes(idx, bytes);
        var magic = Assert.Throws<DataFileException>(() => IndexedDatasetReader.Open(Path.Combine(output, "b")));
        Assert.StartsWith($"{idx}: bad magic", magic.Message);

        File.WriteAllBytes(idx, bytes[..20]);
        Assert.StartsWith($"{idx}: truncated: 20 bytes", Assert.Throws<DataFileException>(() => IndexedDatasetReader.Open(idx)).Message);
        bytes[0] = (byte)'M';
        File.WriteAllBytes(idx, bytes[..(bytes.Length - 8)]);
        var truncated = Assert.Throws<DataFileException>(() => IndexedDatasetReader.Open(idx));
        Assert.StartsWith($"{idx}: truncated or inconsistent", truncated.Message);

        byte[] data = File.ReadAllBytes(bin);
        File.WriteAllBytes(bin, data[..(data.Length - 2)]);
        var shortBin = Assert.Throws<DataFileException>(() => IndexedDatasetReader.Open(bin));
        Assert.Contains("past the end of " + bin, shortBin.Message);
        Assert.Contains(Path.Combine(output, "c.idx"), shortBin.Message);

        var inside = Assert.Throws<ArgumentException>(() => Tokenize(Path.Combine(corpus.Folder, "shards")));
        Assert.Contains($"The output folder '{Path.Combine(corpus.Folder, "shards")}' is inside the corpus ('{corpus.Folder}')", inside.Message);
        Assert.False(Directory.Exists(Path.Combine(corpus.Folder, "shards")));

        File.Delete(Path.Combine(output, "d.bin"));
        Assert.Contains(Path.Combine(output, "d.bin"), Assert.Throws<FileNotFoundException>(() => IndexedDatasetReader.Open(Path.Combine(output, "d"))).Message);
        Assert.Contains("has no manifest.json", Assert.Throws<FileNotFoundException>(() => TokenShardDataset.Open(output, 16)).Message);
    }

    [Fact]
    public void RandomDamageToAnIndexIsRejectedWithTheFileNamedOrReadsInBounds()
    {
        string output = corpus.NewFolder("fuzz");
        Tokenize(output);
        string idx = Path.Combine(output, "a.idx");
        byte[] original = File.ReadAllBytes(idx);
        var random = new Random(0);
        int rejected = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            byte[] bytes = trial % 4 == 0 ? original[..random.Next(original.Length)] : (byte[])original.Clone();
            if (trial % 4 != 0)
                for (int flips = random.Next(1, 4); flips > 0; flips--) bytes[random.Next(bytes.Length)] = (byte)random.Next(256);
            File.WriteAllBytes(idx, bytes);
            try
            {
                using var reader = IndexedDatasetReader.Open(idx);
                for (long i = 0; i < reader.SequenceCount; i++) reader.ReadSequence(i);
            }
            catch (DataFileException e)
            {
                Assert.Contains(Path.Combine(output, "a."), e.Message);
                rejected++;
            }
        }
        Assert.InRange(rejected, 150, 300);
    }

    [Theory]
    [InlineData(64)]
    [InlineData(1000)]
    public void BlocksAreSlicesOfTheConcatenatedIds(int blockSize)
    {
        string output = corpus.NewFolder($"blocks-{blockSize}");
        var report = Tokenize(output);
        TokenShardManifest.Write(output, report.Inputs);
        int[] all = corpus.AllIds;

        using var dataset = TokenShardDataset.Open(output, blockSize);
        Assert.Equal(all.Length, dataset.TokenCount);
        Assert.Equal(all.Length / blockSize, dataset.BlockCount);
        var block = new int[blockSize];
        foreach (long index in new long[] { 0, 1, dataset.BlockCount / 2, dataset.BlockCount - 1 }.Concat(Enumerable.Range(0, (int)dataset.BlockCount).Select(i => (long)i)))
        {
            dataset.ReadBlock(index, block);
            Assert.Equal(all.AsSpan((int)(index * blockSize), blockSize).ToArray(), block);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => dataset.ReadBlock(dataset.BlockCount, block));

        using var view = new MLContext().Data.LoadTokenShards(output, blockSize);
        Assert.Equal(dataset.BlockCount, view.GetRowCount());
        Assert.Equal(new VectorDataViewType(NumberDataViewType.Int32, blockSize), view.Schema[TokenShardDataView.ColumnName].Type);
        var rows = view.GetColumn<VBuffer<int>>(TokenShardDataView.ColumnName).Select(v => v.DenseValues().ToArray()).ToArray();
        Assert.Equal(dataset.BlockCount, rows.Length);
        Assert.Equal(all[..(rows.Length * blockSize)], rows.SelectMany(r => r));

        using var one = TokenShardDataset.Open(Path.Combine(output, "b.bin"), blockSize);
        Assert.Null(one.Manifest);
        Assert.Equal(corpus.Expected[1].Sum(d => d.Length) / blockSize, one.BlockCount);
    }
}
