#!/usr/bin/env bash
# The prepared GPU check of the two modes: correctness on the GPU, then the timing table.
#
#   bash benchmarks/gpu.sh [OUT]        # from the repository root, on a CUDA machine
#
# Installs nothing: it needs python3 with torch (2.4 or newer), numpy, scikit-learn and pytest, and runs the
# package from src/. Every step has a time limit and writes its log and JSON under OUT (default: $OUT, else
# benchmarks/results/gpu) as it goes, so a step that runs out of time loses only itself. Whole script: about
# 9 minutes at most (BUDGET seconds, default 540), most of it compilation and the exact mode's own timings.
# What each step measures: benchmarks/README.md. Checked on the CPU with: DEVICE=cpu SMOKE=1 bash benchmarks/gpu.sh
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-benchmarks/results/gpu}}
PY=${PY:-python3}
BUDGET=${BUDGET:-540}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
START=$SECONDS

# The reference sizes: 8 m-batches of 128 CIFAR-shaped images, 20 iterations or draws, PreAct ResNet-18 and
# the SimpleViT.
# SMOKE=1 shrinks everything (to check this script on a CPU in a minute or two).
if [ -n "${SMOKE:-}" ]; then
  SIZE=(--batches 2 --m 8 --n-iters 3 --image 16 --repeats 1 --width 16)
  ENCODER=(--width 32 --tokens 8)  # the encoder's width is a multiple of its 32-wide heads
else
  ENCODER=()
  SIZE=(--batches 8 --m 128 --n-iters 20 --repeats 2)
fi

step() {  # step NAME LIMIT COMMAND...: run COMMAND with at most LIMIT seconds (and what is left of BUDGET)
  local name=$1 limit=$2 left=$((BUDGET - (SECONDS - START)))
  shift 2
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 10 ]; then echo "== $name: skipped, budget spent"; return; fi
  echo "== $name (at most ${limit} s)"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "   exit $? after $((SECONDS - t0)) s"
  grep -v -i -E "warn|^W[0-9]{4} " "$OUT/$name.log" | tail -n 30
}

BENCH=("$PY" -m sharpness.bench --device "$DEVICE" "${SIZE[@]}")

# 1. The machine and the versions.
step env 30 "$PY" -c "import torch, sys; print(sys.version); print('torch', torch.__version__); \
print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"

# 2. Correctness on the GPU: fast-mode values within 0.5% of the exact mode on networks trained on digits
#    (the agreement tests run on cuda there), feasibility, restoration, fallbacks, captured passes.
step tests 120 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" tests/bench/test_fast.py

# 3. The table without compilation (cheap to start): floors, exact mode, fast mode eager and with CUDA graphs.
#    Both models; ResNet-18 also with 8 m-batches per pass (vmap: grouped convolutions).
step table-eager 200 "${BENCH[@]}" --model resnet18 --modes exact fast:compile=off fast:compile=cudagraphs \
  fast:stack=8,compile=off --json "$OUT/table-eager-resnet.json"
step table-eager-vit 120 "${BENCH[@]}" --model vit --modes exact fast:compile=off fast:compile=cudagraphs \
  --json "$OUT/table-eager-vit.json"

# 4. The fast mode's defaults (TF32 search, Inductor), and the bf16 search, on the cases that take longest.
step table-compiled 200 "${BENCH[@]}" --model resnet18 vit --cases worst-linf average-l2 \
  --modes exact fast fast:precision=bf16 --json "$OUT/table-compiled.json"

# 5. The BERT-sized encoder (22.6 M parameters, 64 tokens per sequence), both modes, with what budget is left.
step table-encoder 120 "${BENCH[@]}" --model encoder "${ENCODER[@]}" --modes exact fast --json "$OUT/table-encoder.json"

echo "== done in $((SECONDS - START)) s; results in $OUT"
