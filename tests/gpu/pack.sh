#!/usr/bin/env bash
# Run here (no GPU needed) before a GPU session: packs what tests/gpu/run.sh needs on the lent machine, which has
# PyTorch with CUDA but no .NET. Into .gpu/ (git-ignored; name it in the device tool's `carry`; when the two archives
# and the tree exceed the 64 MiB one call carries, the script prints a two-call recipe):
#   app.tar.xz    the benchmarks and the CLI built on the libtorch backend (TorchSharp without libtorch: the machine's
#                 PyTorch brings it, through MLNETFT_LIBTORCH), without ONNX Runtime's CUDA provider (284 MB: more than
#                 the device tool carries; see run.sh);
#   dotnet.tar.xz the .NET runtime (Microsoft.NETCore.App and Microsoft.AspNetCore.App) and its host.
# The working tree travels too (models/facts-base and examples/data for the quickstart); all must stay under 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
rm -rf .gpu && mkdir -p .gpu
scratch=$(mktemp -d)
git worktree add --detach "$scratch/tree" HEAD >/dev/null
trap 'git -C "$root" worktree remove --force "$scratch/tree"; rm -rf "$scratch"' EXIT
for project in tests/MLNetFinetune.Benchmarks src/MLNetFinetune.Cli; do
  dotnet publish "$scratch/tree/$project" -c Release -r linux-x64 --self-contained false -p:TorchBackend=libtorch -o "$scratch/app" -v quiet -nologo
done
# ONNX Runtime's GPU package copies its Windows libraries whatever the runtime identifier; none of them is needed there.
find "$scratch/app" \( -name 'libonnxruntime_providers_cuda.so' -o -name 'libonnxruntime_providers_tensorrt.so' -o -name 'onnxruntime*.dll' -o -name 'DirectML.dll' \) -delete
find "$scratch/app" \( -name '*.pdb' -o -name '*.dbg' -o -name '*.xml' \) -delete   # symbols and API docs stay here
export XZ_OPT=-9e
tar -C "$scratch" -cJf .gpu/app.tar.xz app
dotnet_root=$(dirname "$(readlink -f "$(command -v dotnet)")")
runtime=$(ls -d "$dotnet_root"/shared/Microsoft.NETCore.App/10.* | sort -V | tail -n 1)
aspnet=$(ls -d "$dotnet_root"/shared/Microsoft.AspNetCore.App/10.* | sort -V | tail -n 1)
tar -C "$dotnet_root" --exclude=createdump --exclude='libmscordaccore.so' --exclude='libmscordbi.so' \
  -cJf .gpu/dotnet.tar.xz dotnet host "${runtime#"$dotnet_root"/}" "${aspnet#"$dotnet_root"/}"
# What travels: the tracked tree and .gpu/, 64 MiB at most.
tree_bytes=$(git ls-files -z | xargs -0 du -cb | tail -n 1 | cut -f1)
total=$(( tree_bytes + $(du -cb .gpu/* | tail -n 1 | cut -f1) ))
echo "tree $(( tree_bytes >> 20 )) MiB + .gpu $(du -ch .gpu/* | tail -n 1 | cut -f1) = $(( total >> 20 )) MiB; the device tool carries 64 MiB a call"
if [ "$total" -gt $(( 64 << 20 )) ]; then
  # Two calls on the same warm machine (ignored files stay between calls): the runtime first, then the run.
  echo "too much for one call; use two, back to back:"
  echo "  run(command=\"bash tests/gpu/run.sh --unpack-only\", carry=[\".gpu/dotnet.tar.xz\"])"
  echo "  run(command=\"bash tests/gpu/run.sh\", carry=[\".gpu/app.tar.xz\"], timeout_s=540)"
fi
