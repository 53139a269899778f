#!/usr/bin/env bash
# Run here (no GPU needed) before a GPU session: packs what tests/gpu/run.sh needs on the lent machine, which has
# PyTorch with CUDA but no .NET. Into .gpu/ (git-ignored; name it in the device tool's `carry`):
#   app.tar.xz    the benchmarks and the CLI built on the libtorch backend (TorchSharp without libtorch: the machine's
#                 PyTorch brings it, through MLNETFT_LIBTORCH), without ONNX Runtime's CUDA provider (284 MB: more than
#                 the device tool carries; see run.sh);
#   dotnet.tar.xz the .NET runtime (Microsoft.NETCore.App and Microsoft.AspNetCore.App) and its host.
# The working tree travels too (models/facts-base and examples/data for the quickstart); all must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu
scratch=$(mktemp -d)
git worktree add --detach "$scratch/tree" HEAD >/dev/null
trap 'git -C "$root" worktree remove --force "$scratch/tree"; rm -rf "$scratch"' EXIT
for project in tests/MLNetFinetune.Benchmarks src/MLNetFinetune.Cli; do
  dotnet publish "$scratch/tree/$project" -c Release -p:TorchBackend=libtorch -o "$scratch/app" -v quiet -nologo
done
rm -f "$scratch"/app/runtimes/linux-x64/native/libonnxruntime_providers_{cuda,tensorrt}.so
tar -C "$scratch" -cJf .gpu/app.tar.xz app
dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
runtime=$(ls -d "$dotnet_root"/shared/Microsoft.NETCore.App/10.* | sort -V | tail -n 1)
aspnet=$(ls -d "$dotnet_root"/shared/Microsoft.AspNetCore.App/10.* | sort -V | tail -n 1)
tar -C "$dotnet_root" -cJf .gpu/dotnet.tar.xz dotnet host "${runtime#"$dotnet_root"/}" "${aspnet#"$dotnet_root"/}"
du -ch .gpu/* | tail -n 1
