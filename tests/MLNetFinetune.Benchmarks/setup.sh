#!/usr/bin/env bash
# Reference tools the benchmarks compare against (not needed by CI or the tests).
set -euo pipefail
apt-get update -qq
# Debian's SentencePiece, the reference BPE trainer for the tokenizer benchmark.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-sentencepiece
# Debian's PyTorch (1.13) as the reference implementation and speed baseline of the train benchmark;
# without the pthread OpenBLAS it falls back to a ~40x slower BLAS.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch libopenblas0-pthread
