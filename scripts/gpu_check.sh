#!/usr/bin/env bash
# Everything a lent GPU machine should check, in one run from the repository root: the GPU tests, the kernel
# benchmark at the issue's point (gated delta rule fwd+bwd, B=4 T=4096 H=16 K=V=128 bf16, chunked and pallas, and
# fla's Triton kernel when it imports) and a few smaller points, the mLSTM at one point, then the MFU of a Gated
# DeltaNet LM training step on the chunked and on the Pallas kernels. Each step has its own timeout, so a hung step
# costs its limit and the others still run: under 8 minutes (435 s of limits) in all.
#
#   bash scripts/gpu_check.sh            on a GPU machine
#   bash scripts/gpu_check.sh --dry-run  (or CPU=1) the same steps on the CPU at tiny sizes: checks the script
#
# Logs, JSON and summary.txt go to $OUT (bench_results/ when unset); the summary is printed at the end. PYTHON is
# the interpreter (default .venv/bin/python if there, else python3). If jax, numpy, pytest or fla are missing and
# a .whl/ folder of wheels came along, those wheels are installed into /tmp/site first (BENCHMARKS.md says how).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=${CPU:-0}
[ "${1:-}" = "--dry-run" ] && DRY=1
DIR=${OUT:-bench_results}
mkdir -p "$DIR"
LOG="$DIR/gpu_check.log"
SUMMARY="$DIR/summary.txt"
: >"$LOG"
: >"$SUMMARY"
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false # JAX takes GPU memory as needed, leaving the rest to torch for fla
[ "$DRY" = 1 ] && export JAX_PLATFORMS=cpu

note() { echo "$*" | tee -a "$SUMMARY"; }

importable() { "$PY" -c "import $1" 2>/dev/null; }

setup() { # install the carried wheels only when something is missing
  local missing="" m
  for m in jax numpy pytest fla; do importable "$m" || missing="$missing $m"; done
  if [ -n "$missing" ] && ls .whl/*.whl >/dev/null 2>&1; then
    note "missing:$missing; installing .whl/*.whl into /tmp/site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH="$PYTHONPATH:/tmp/site"
  fi
  for m in jax numpy pytest; do importable "$m" || { note "FATAL: $PY cannot import $m"; exit 1; }; done
  importable fla || note "fla not installed: the fla row will say so"
}

status_of() { case $1 in 0) echo ok ;; 124 | 137) echo "TIMED OUT" ;; *) echo "FAILED (rc $1)" ;; esac }

step() { # step NAME SECONDS COMMAND...: run it under a timeout, log its output, note its status and duration
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  note "$(printf '%-7s %-16s %4ds (limit %ds)' "$name" "$(status_of "$rc")" $((SECONDS - t0)) "$limit")"
}

bench() { # bench NAME SECONDS ARGS...: the kernel benchmark, JSON to $DIR/NAME.json
  local name=$1 limit=$2
  shift 2
  step "$name" "$limit" "$PY" -m benchmarks.kernels "$@" --out "$DIR/$name.json"
}

setup
note "$("$PY" -c 'import jax; print("jax", jax.__version__, "on", jax.default_backend(), jax.devices()[0].device_kind)')"
if [ "$DRY" != 1 ] && [ "$("$PY" -c 'import jax; print(jax.default_backend())')" != gpu ]; then
  note "FATAL: JAX sees no GPU here; use --dry-run (or CPU=1) for the CPU check"
  exit 1
fi

if [ "$DRY" = 1 ]; then # tiny sizes: the same steps in seconds
  ISSUE=(--B 1 --T 64 --H 2 --K 16 --reps 1)
  SMALL=(--B 1 --T 32,64 --H 2 --K 16 --reps 1)
  MLSTM=(--B 1 --T 64 --H 2 --K 16 --reps 1)
else
  ISSUE=(--B 4 --T 4096 --H 16 --K 128 --reps 5)
  SMALL=(--B 1 --T 1024,4096 --H 16 --K 64,128 --reps 5)
  MLSTM=(--B 4 --T 4096 --H 16 --K 128 --reps 5)
fi

step tests 110 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/kernels
note "        pytest: $(grep -E '(passed|failed|skipped|error|no tests ran)' "$LOG" | tail -1)"
bench issue 120 "${ISSUE[@]}" --dtype bfloat16 --backends chunked,pallas --fla --fla-backends chunked,pallas
bench mlstm 45 --op mlstm "${MLSTM[@]}" --dtype bfloat16 --backends chunked,pallas
bench small 70 "${SMALL[@]}" --dtype bfloat16 --backends reference,chunked,pallas

mfu() { # mfu BACKEND: a Gated DeltaNet LM training for a few steps on the kernels of BACKEND; its summary's MFU
  local run="$DIR/mfu-$1"
  rm -rf "$run"
  step "mfu-$1" "$MFU_LIMIT" "$PY" -m memlab.cli train experiments/mqar.py --workdir "$run" --set model.mixers=gdn \
    --set model.matrix_backend="$1" --set train.precision=bfloat16 --set train.eval_every=100000 \
    --set train.checkpoint_every=100000 --set train.warmup_steps=2 "${MFU[@]}"
  "$PY" -c 'import json, sys; s = json.load(open(sys.argv[1])); print("        mfu-%s: %s, %.1f TFLOP/s/device, MFU %s"
  % (sys.argv[2], s["device_kind"], s["tflops_per_s_per_device"], s["mfu"]))' "$run/summary.json" "$1" 2>&1 | tee -a "$SUMMARY"
}
if [ "$DRY" = 1 ]; then
  MFU=(--set data.seq_len=64 --set train.steps=4 --set train.batch_size=2 --set train.log_every=2)
  MFU_LIMIT=120
else # d 1024, 4 layers, 8 heads of 128 (about 50M parameters), T 2048, 8 x 2048 tokens a step
  MFU=(--set model.d_model=1024 --set model.num_layers=4 --set model.num_heads=8 --set data.seq_len=2048
    --set data.num_kv_pairs=64 --set train.batch_size=8 --set train.steps=20 --set train.log_every=5)
  MFU_LIMIT=45
fi
mfu chunked
mfu pallas

note ""
ls "$DIR"/{issue,mlstm,small}.json >/dev/null 2>&1 || note "(some benchmark steps wrote no JSON; see $LOG)"
"$PY" -m benchmarks.summarize $(ls "$DIR"/{issue,mlstm,small}.json 2>/dev/null) 2>&1 | tee -a "$SUMMARY"
echo "logs, JSON and summary.txt in $DIR"
