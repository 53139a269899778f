#!/usr/bin/env bash
# The GPU issue's one prepared run (≤ 8 minutes on a lent H200/H100), writing one JSON file of results
# ($OUT/gpu.json on the device tool, else ./gpu.json). On the device tool: run tests/gpu/pack.sh here first, then
#   run(command="bash tests/gpu/run.sh", carry=[".gpu"], timeout_s=540)
# Steps: training throughput of the pythia-160m and smollm2-135m shapes at 16 × 1024 tokens per step in bfloat16 and
# float32 (FlatAdamW, the CUDA default) with the PyTorch reference (tests/reference, eager, float32) on the same card in the same run, and MFU against
# the card's bf16 peak; ONNX Runtime generation (pythia-70m shape here, batch 1) on CUDA against CPU; the quickstart on
# the GPU end to end. SMOKE=1 DEVICE=cpu checks the plumbing on a CPU machine with tiny settings and the local build.
set -uo pipefail
cd "$(dirname "$0")/../.."
device=${DEVICE:-cuda}
results=${OUT:-.}/gpu.json
log=${OUT:-.}/gpu.log
# The archives pack.sh made, unpacked once into .gpu-unpacked/ (ignored: it stays on a warm machine between calls).
for part in dotnet app; do
  if [ -f ".gpu/$part.tar.xz" ]; then rm -rf ".gpu-unpacked/$part"; mkdir -p ".gpu-unpacked/$part"; tar -C ".gpu-unpacked/$part" -xJf ".gpu/$part.tar.xz" || exit 1; fi
done
[ "${1:-}" = --unpack-only ] && { ls .gpu-unpacked; exit 0; }
: > "$log"
if [ -x .gpu-unpacked/dotnet/dotnet ] && [ -d .gpu-unpacked/app/app ]; then
  dotnet=$PWD/.gpu-unpacked/dotnet/dotnet; bench=$PWD/.gpu-unpacked/app/app/MLNetFinetune.Benchmarks.dll; cli=$PWD/.gpu-unpacked/app/app/mlnet-finetune.dll
  # The libtorch backend runs on the machine's PyTorch (CUDA); ONNX Runtime's CUDA provider finds CUDA's libraries in
  # the same Python environment.
  torch_lib=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))")
  export MLNETFT_LIBTORCH=${MLNETFT_LIBTORCH:-$torch_lib}
  nvidia_libs=$(python3 -c "import glob, os, nvidia; print(':'.join(sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], '*', 'lib')))))" 2>/dev/null || true)
  export LD_LIBRARY_PATH=$torch_lib${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  python=${PYTHON:-python3}
else
  dotnet=dotnet; bench=tests/MLNetFinetune.Benchmarks/bin/Release/net10.0/MLNetFinetune.Benchmarks.dll; cli=src/MLNetFinetune.Cli/bin/Release/net10.0/mlnet-finetune.dll
  python=/usr/bin/python3
fi
if [ "${SMOKE:-0}" = 1 ]; then shapes=(small); block=64; batch=2; steps=2; quick=(--steps 5 --max-heldout 5); new=16
else shapes=(pythia-160m smollm2-135m); block=1024; batch=16; steps=20; quick=(); new=256; fi

# Each benchmark's last line is its JSON; a failure is recorded with its last output line instead of stopping the run.
run() {
  local name=$1; shift
  echo "== $name: $*" >> "$log"
  local out; out=$(timeout "${LIMIT:-150}" "$dotnet" "$@" 2>&1 | tee -a "$log" | tail -n 1)
  if [[ $out == \{* ]]; then printf '"%s": %s,\n' "$name" "$out"; else printf '"%s": {"failed": %s},\n' "$name" "$("$python" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$out")"; fi
}
{
  echo "{"
  printf '"gpu": "%s",\n' "$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)"
  for shape in "${shapes[@]}"; do
    for dtype in bfloat16 float32; do
      run "train_${shape}_${dtype}" "$bench" train --shape "$shape" --device "$device" --dtype "$dtype" --block $block --batch $batch --steps $steps --optimizer flat --python "$python"
    done
  done
  for provider in "$device" cpu; do
    run "generate_${provider}" "$bench" generate --provider "$provider" --new $new --no-genai
  done
  LIMIT=300 run quickstart "$cli" quickstart --device "$device" "${quick[@]}"
  echo '"end": null'
  echo "}"
} > "$results.parts"
# MFU: the model's training FLOPs per token (6 × parameters + attention's 12 × layers × width × block, nanoGPT's count)
# times tokens/s, against the card's dense bf16 peak.
"$python" - "$results.parts" "$results" <<'PY'
import json, sys
parts = json.load(open(sys.argv[1]))
peaks = {"H200": 989e12, "H100": 989e12, "A100": 312e12}
peak = next((v for k, v in peaks.items() if k in parts.get("gpu", "")), None)
for name, r in parts.items():
    if name.startswith("train_") and isinstance(r, dict) and "tokens_per_s" in r and "parameters" in r and peak:
        flops = 6 * r["parameters"] + 12 * r.get("layers", 0) * r.get("hidden", 0) * r.get("block", 0)
        r["mfu_vs_bf16_peak"] = round(flops * r["tokens_per_s"] / peak, 3)
parts.pop("end", None)
parts["peak_bf16_flops"] = peak
json.dump(parts, open(sys.argv[2], "w"), indent=1)
print(json.dumps(parts))
PY
rm -f "$results.parts"
