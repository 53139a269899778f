// Compiled into the build by RoslynCodeTaskFactory (build/TorchSharpNativeFix.targets) and into the tests.
//
// Why this exists: libLibTorchSharp.so from TorchSharp 0.107.0 lists GLIBCXX_3.4.32 (GCC 13) among the
// versions it needs from libstdc++, for one symbol, _ZSt21ios_base_library_initv, that no relocation uses.
// On Debian 12, Ubuntu 22.04 and RHEL 9 libstdc++ is older, so the dynamic linker refuses the whole library.
// Marking that version requirement weak (VER_FLG_WEAK) and making the symbol unversioned lets glibc load it;
// the code never calls the symbol. No ELF editing library is served on NuGet for .NET, and the edit is two
// fields, so the reader below is hand-written and touches nothing else.
#nullable enable
using System;
using System.Collections.Generic;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;

namespace MLNetFinetune.Build
{
    /// <summary>MSBuild task: weakens one libstdc++ version requirement in copies of libLibTorchSharp.so.</summary>
    public sealed class WeakenLibstdcxxVersion : Microsoft.Build.Utilities.Task
    {
        /// <summary>Native libraries to patch in place (copies in bin/ or publish/, never the NuGet cache).</summary>
        [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();

        /// <summary>auto: patch only when the host's libstdc++ lacks the version; true: always; false: never.</summary>
        public string Mode { get; set; } = "auto";

        /// <inheritdoc />
        public override bool Execute()
        {
            string mode = Mode.ToLowerInvariant();
            if (mode != "auto" && mode != "true" && mode != "false")
            {
                Log.LogError($"TorchSharp native fix: PatchTorchSharpNative is '{Mode}'; use auto, true or false.");
                return false;
            }
            if (mode == "false") return true;
            if (mode == "auto")
            {
                string? libstdcxx = ElfVersionPatcher.FindHostLibstdcxx();
                if (libstdcxx == null)
                {
                    Log.LogMessage(MessageImportance.Low, "TorchSharp native fix: no libstdc++.so.6 found on this host; nothing patched.");
                    return true;
                }
                try
                {
                    if (ElfVersionPatcher.DefinesVersion(libstdcxx, ElfVersionPatcher.Glibcxx3432))
                    {
                        Log.LogMessage(MessageImportance.Low, $"TorchSharp native fix: {libstdcxx} defines {ElfVersionPatcher.Glibcxx3432}; nothing to patch.");
                        return true;
                    }
                }
                catch (Exception e) when (e is IOException || e is InvalidDataException || e is UnauthorizedAccessException)
                {
                    Log.LogWarning($"TorchSharp native fix: cannot read {libstdcxx} ({e.Message}); patching to be safe.");
                }
            }
            foreach (ITaskItem item in Files)
            {
                string path = item.ItemSpec;
                try
                {
                    PatchResult result = ElfVersionPatcher.WeakenVersionRequirement(path, ElfVersionPatcher.Glibcxx3432, ElfVersionPatcher.IosBaseLibraryInit);
                    Log.LogMessage(MessageImportance.Normal, $"TorchSharp native fix: {path}: {result}.");
                }
                catch (Exception e) when (e is IOException || e is InvalidDataException || e is UnauthorizedAccessException)
                {
                    Log.LogError($"TorchSharp native fix: cannot patch {path}: {e.Message}");
                }
            }
            return !Log.HasLoggedErrors;
        }
    }

    /// <summary>What <see cref="ElfVersionPatcher.WeakenVersionRequirement"/> did to a file.</summary>
    public enum PatchResult
    {
        /// <summary>The requirement was strong and is now weak.</summary>
        Patched,
        /// <summary>The requirement was already weak (an earlier build patched this copy).</summary>
        AlreadyPatched,
        /// <summary>The file does not require that version at all.</summary>
        NotRequired,
    }

    /// <summary>Minimal ELF64 little-endian reader/writer for symbol-version tables.</summary>
    public static class ElfVersionPatcher
    {
        /// <summary>The libstdc++ version GCC 13 introduced.</summary>
        public const string Glibcxx3432 = "GLIBCXX_3.4.32";
        /// <summary>The only symbol libLibTorchSharp.so takes from that version.</summary>
        public const string IosBaseLibraryInit = "_ZSt21ios_base_library_initv";

        const uint ShtDynsym = 11, ShtGnuVerdef = 0x6ffffffd, ShtGnuVerneed = 0x6ffffffe, ShtGnuVersym = 0x6fffffff;
        const ushort VerFlgWeak = 0x2, VerNdxGlobal = 1;

        /// <summary>The libstdc++.so.6 the dynamic linker would pick, or null when there is none.</summary>
        public static string? FindHostLibstdcxx()
        {
            string triplet = System.Runtime.InteropServices.RuntimeInformation.OSArchitecture == System.Runtime.InteropServices.Architecture.Arm64
                ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
            string[] dirs = { "/lib/" + triplet, "/usr/lib/" + triplet, "/lib64", "/usr/lib64", "/lib", "/usr/lib" };
            foreach (string dir in dirs)
            {
                string candidate = Path.Combine(dir, "libstdc++.so.6");
                if (File.Exists(candidate)) return candidate;
            }
            return null;
        }

        /// <summary>True when the shared library defines (exports) the symbol version <paramref name="version"/>.</summary>
        public static bool DefinesVersion(string path, string version)
        {
            var elf = new Elf(File.ReadAllBytes(path), path);
            Section? verdef = elf.FindSection(ShtGnuVerdef);
            if (verdef == null) return false;
            Section strings = elf.Linked(verdef);
            long offset = verdef.Offset;
            for (int i = 0; i < (int)verdef.Info; i++)
            {
                uint aux = elf.U32(offset + 12), next = elf.U32(offset + 16);
                uint nameOffset = elf.U32(offset + aux);
                if (elf.String(strings, nameOffset) == version) return true;
                if (next == 0) break;
                offset += next;
            }
            return false;
        }

        /// <summary>
        /// Sets VER_FLG_WEAK on the requirement of <paramref name="version"/> and makes <paramref name="symbol"/>
        /// unversioned, in place. Idempotent. Throws <see cref="InvalidDataException"/> when the file is not
        /// a 64-bit little-endian ELF with version tables.
        /// </summary>
        public static PatchResult WeakenVersionRequirement(string path, string version, string symbol)
        {
            byte[] bytes = File.ReadAllBytes(path);
            var elf = new Elf(bytes, path);
            Section verneed = elf.FindSection(ShtGnuVerneed) ?? throw new InvalidDataException($"{path}: no .gnu.version_r section");

            long auxAt = FindRequirement(elf, verneed, version);
            if (auxAt < 0) return PatchResult.NotRequired;

            ushort flags = elf.U16(auxAt + 4);
            ushort versionIndex = elf.U16(auxAt + 6);
            bool changed = (flags & VerFlgWeak) == 0;
            elf.PutU16(auxAt + 4, (ushort)(flags | VerFlgWeak));

            Section dynsym = elf.FindSection(ShtDynsym) ?? throw new InvalidDataException($"{path}: no .dynsym section");
            Section versym = elf.FindSection(ShtGnuVersym) ?? throw new InvalidDataException($"{path}: no .gnu.version section");
            Section symbolNames = elf.Linked(dynsym);
            long symbolCount = dynsym.Size / 24;
            for (long k = 0; k < symbolCount; k++)
            {
                long versymAt = versym.Offset + 2 * k;
                if ((elf.U16(versymAt) & 0x7fff) != versionIndex) continue;
                string name = elf.String(symbolNames, elf.U32(dynsym.Offset + 24 * k));
                if (name != symbol)
                    throw new InvalidDataException($"{path}: symbol {name} also needs {version}; weakening the requirement would not be safe");
                elf.PutU16(versymAt, VerNdxGlobal);
                changed = true;
            }
            if (!changed) return PatchResult.AlreadyPatched;

            // Write beside the file, then rename: a killed build never leaves a half-written library.
            string temp = path + ".patching";
            try
            {
                File.WriteAllBytes(temp, bytes);
                File.Replace(temp, path, null);
            }
            finally
            {
                if (File.Exists(temp)) File.Delete(temp);
            }
            return PatchResult.Patched;
        }

        /// <summary>True when <paramref name="path"/> requires <paramref name="version"/> without VER_FLG_WEAK.</summary>
        public static bool RequiresStrongly(string path, string version)
        {
            var elf = new Elf(File.ReadAllBytes(path), path);
            Section? verneed = elf.FindSection(ShtGnuVerneed);
            if (verneed == null) return false;
            long aux = FindRequirement(elf, verneed, version);
            return aux >= 0 && (elf.U16(aux + 4) & VerFlgWeak) == 0;
        }

        // Walks .gnu.version_r (Verneed entries, each with a chain of Vernaux) to the Vernaux naming the version.
        static long FindRequirement(Elf elf, Section verneed, string version)
        {
            Section strings = elf.Linked(verneed);
            long need = verneed.Offset;
            for (int i = 0; i < (int)verneed.Info; i++)
            {
                ushort count = elf.U16(need + 2);
                long aux = need + elf.U32(need + 8);
                for (int j = 0; j < count; j++)
                {
                    if (elf.String(strings, elf.U32(aux + 8)) == version) return aux;
                    aux += elf.U32(aux + 12);
                }
                uint next = elf.U32(need + 12);
                if (next == 0) break;
                need += next;
            }
            return -1;
        }

        sealed class Section
        {
            public uint Type, Link, Info;
            public long Offset, Size;
        }

        sealed class Elf
        {
            readonly byte[] _b;
            readonly string _path;
            public readonly List<Section> Sections = new List<Section>();

            public Elf(byte[] bytes, string path)
            {
                _b = bytes;
                _path = path;
                if (bytes.Length < 64 || bytes[0] != 0x7f || bytes[1] != (byte)'E' || bytes[2] != (byte)'L' || bytes[3] != (byte)'F')
                    throw new InvalidDataException($"{path}: not an ELF file");
                if (bytes[4] != 2 || bytes[5] != 1)
                    throw new InvalidDataException($"{path}: only 64-bit little-endian ELF is supported");
                long shoff = (long)U64(40);
                ushort shentsize = U16(58), shnum = U16(60);
                if (shentsize != 64 || shoff <= 0 || shoff + (long)shnum * 64 > bytes.Length)
                    throw new InvalidDataException($"{path}: section header table is out of range");
                for (int i = 0; i < shnum; i++)
                {
                    long h = shoff + 64L * i;
                    var s = new Section { Type = U32(h + 4), Offset = (long)U64(h + 24), Size = (long)U64(h + 32), Link = U32(h + 40), Info = U32(h + 44) };
                    if (s.Type != 8 /* SHT_NOBITS */ && s.Offset + s.Size > bytes.Length)
                        throw new InvalidDataException($"{path}: section {i} is out of range");
                    Sections.Add(s);
                }
            }

            public Section? FindSection(uint type) => Sections.Find(s => s.Type == type);

            public ushort U16(long at) { Check(at, 2); return (ushort)(_b[at] | _b[at + 1] << 8); }
            public uint U32(long at) { Check(at, 4); return (uint)(_b[at] | _b[at + 1] << 8 | _b[at + 2] << 16 | _b[at + 3] << 24); }
            public ulong U64(long at) => U32(at) | (ulong)U32(at + 4) << 32;
            public void PutU16(long at, ushort v) { Check(at, 2); _b[at] = (byte)v; _b[at + 1] = (byte)(v >> 8); }

            public Section Linked(Section s) => s.Link < Sections.Count ? Sections[(int)s.Link]
                : throw new InvalidDataException($"{_path}: a section links to section {s.Link}, which does not exist");

            void Check(long at, int size)
            {
                if (at < 0 || at + size > _b.Length) throw new InvalidDataException($"{_path}: a version-table entry points outside the file (offset {at})");
            }

            public string String(Section table, uint offset)
            {
                long start = table.Offset + offset, end = start;
                long limit = table.Offset + table.Size;
                if (start >= limit) throw new InvalidDataException($"{_path}: string offset {offset} outside its table");
                while (end < limit && _b[end] != 0) end++;
                return Encoding.ASCII.GetString(_b, (int)start, (int)(end - start));
            }
        }
    }
}
