#!/usr/bin/env bash
# Accelerator check of the throughput targets, one short script (<= 200 s of commands), run from the repo root:
#
#     bash benchmarks/device_check.sh              # paper config on the accelerator
#     SMALL=1 PYTHON=.venv/bin/python bash benchmarks/device_check.sh   # tiny sizes, any machine (CPU smoke run)
#
# Needs jax (+ CUDA); nothing from the network (ml_collections comes from .whl/). With BASELINE=<checkout of the
# paper's released code> (and BASELINE_PYTHON, an interpreter with torch + CUDA; default $PYTHON) the baseline cases
# time the paper's model in separate processes, alternating with ours (benchmarks/baseline.py, ROUNDS each).
# Every result goes as one JSON line (plus a "label") into $OUT/results.jsonl; each command's full output goes
# to $OUT/<label>.log; a table is printed at the end. Each command runs under `timeout` and a failure is
# recorded as {"label", "error"} so the rest still runs; commands left when the time budget is spent are skipped.
set -u

PY=${PYTHON:-python3}
# A machine without ml_collections (an accelerator image with no network) installs it from the wheels in .whl/.
if ! "$PY" -c "import ml_collections" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
OUT=${OUT:-/tmp/device_check}
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
# Grow GPU memory on demand: peak_bytes stays the real peak.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}

if [ "${SMALL:-0}" = "1" ]; then
  MODEL=(--resolution 16 --batch 4 --width 8 --modes 4 --fc-dim 16)
  STEPS=(--steps 2 --warmup 1)
  T_TRAIN=120 T_INFER=90 BUDGET_S=${BUDGET_S:-600}
else
  # The paper's model: width 64, 32 modes, 4 layers, fc 128, Poisson inputs (4 channels), 128 x 128, batch 128.
  MODEL=(--resolution 128 --batch 128 --width 64 --modes 32 --fc-dim 128)
  STEPS=(--steps 20 --warmup 3)
  # No case starts after BUDGET_S seconds and each runs under its own timeout: at most ~BUDGET_S + 45 s.
  T_TRAIN=45 T_INFER=40 BUDGET_S=${BUDGET_S:-150}
fi
BASELINE_ARGS=()
T_BASE=$((T_TRAIN * 2 * ${ROUNDS:-3}))
if [ -n "${BASELINE:-}" ]; then
  BASELINE_ARGS=(--baseline "$BASELINE" --baseline-python "${BASELINE_PYTHON:-$PY}" --rounds "${ROUNDS:-3}")
fi

echo "== device_check $(date -u +%Y-%m-%dT%H:%M:%SZ) SMALL=${SMALL:-0} git=$(git rev-parse --short HEAD 2>/dev/null || echo none)"
nvidia-smi 2>&1 | head -n 20 || echo "nvidia-smi: not available"
"$PY" - <<'EOF' 2>&1
import sys
print("python", sys.version.split()[0])
try:
    import jax
    print("jax", jax.__version__, "devices", jax.devices())
except Exception as exc:  # report and go on: the cases below record their own failures
    print("jax import failed:", exc)
for name in ("flax", "optax", "ml_collections", "torch"):
    try:
        module = __import__(name)
        extra = f" cuda={module.cuda.is_available()}" if name == "torch" else ""
        print(name, getattr(module, "__version__", "?") + extra)
    except Exception as exc:
        print(name, "not importable:", exc)
EOF

# run_case LABEL TIMEOUT_S ARGS... : one benchmark, its last stdout line appended to results.jsonl.
run_case() {
  local label=$1 limit=$2
  shift 2
  if [ "$SECONDS" -ge "$BUDGET_S" ]; then
    echo "-- $label: skipped (time budget of ${BUDGET_S}s spent)"
    echo "{\"label\": \"$label\", \"error\": \"skipped: time budget spent\"}" >>"$RESULTS"
    return 0
  fi
  echo "-- $label: $PY -m benchmarks.throughput $* --json"
  local log="$OUT/$label.log" start=$SECONDS
  timeout -k 5 "$limit" "$PY" -m benchmarks.throughput "$@" --json >"$log" 2>&1
  local rc=$?
  LABEL=$label RC=$rc "$PY" - "$log" >>"$RESULTS" <<'EOF'
import json, os, sys
lines = open(sys.argv[1], errors="replace").read().strip().splitlines()
label, rc = os.environ["LABEL"], int(os.environ["RC"])
try:
    result = json.loads(lines[-1])
    if not isinstance(result, dict):
        raise ValueError("not an object")
except (IndexError, ValueError):
    result = {"error": f"exit {rc}" + (" (timeout)" if rc in (124, 137) else ""), "tail": lines[-3:]}
print(json.dumps({"label": label, **result}))
EOF
  echo "   rc=$rc in $((SECONDS - start))s; last lines:"
  tail -n 2 "$log" | cut -c1-300
}

# dft is the default spectral path; remat (recompute each Fourier layer in the backward) trades compute for memory.
run_case train_f32_dft "$T_TRAIN" train "${MODEL[@]}" "${STEPS[@]}" --dtype float32
run_case train_f32_dft_remat "$T_TRAIN" train "${MODEL[@]}" "${STEPS[@]}" --dtype float32 --remat
# The CPU's default form (channels-first layers with a hand-written gradient; keeps one field per layer), untiled head.
run_case train_f32_fused "$T_TRAIN" train "${MODEL[@]}" "${STEPS[@]}" --dtype float32 --layer-impl fused --head-tile 0
run_case train_bf16_dft "$T_TRAIN" train "${MODEL[@]}" "${STEPS[@]}" --dtype bfloat16
run_case train_bf16_dft_remat "$T_TRAIN" train "${MODEL[@]}" "${STEPS[@]}" --dtype bfloat16 --remat
if [ -n "${BASELINE:-}" ]; then
  run_case infer_f32_dft_vs_paper "$T_BASE" infer "${MODEL[@]}" "${STEPS[@]}" --dtype float32 "${BASELINE_ARGS[@]}"
  run_case train_f32_dft_vs_paper "$T_BASE" train "${MODEL[@]}" "${STEPS[@]}" --dtype float32 "${BASELINE_ARGS[@]}"
else
  run_case infer_f32_dft "$T_INFER" infer "${MODEL[@]}" "${STEPS[@]}" --dtype float32
  run_case train_f32_fft "$T_TRAIN" train "${MODEL[@]}" "${STEPS[@]}" --dtype float32 --spectral-impl fft
fi
# Full float32 matmuls (no TF32), the precision PyTorch uses by default.
export JAX_DEFAULT_MATMUL_PRECISION=highest
run_case train_f32_dft_highest "$T_TRAIN" train "${MODEL[@]}" "${STEPS[@]}" --dtype float32
unset JAX_DEFAULT_MATMUL_PRECISION

echo "== results ($RESULTS), total ${SECONDS}s"
"$PY" - "$RESULTS" <<'EOF'
import json, sys
head = f"{'label':<24}{'samples/s':>12}{'step ms':>10}{'compile s':>10}{'peak GB':>9}{'temp GB':>9}{'paper s/s':>11}{'x paper':>8}"
print(head)
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "error" in r:
        print(f"{r['label']:<24} ERROR {r['error']}")
        continue
    def num(key, scale=1.0, fmt="{:.1f}"):
        value = r.get(key)
        return fmt.format(value * scale) if isinstance(value, (int, float)) else "-"
    print(
        f"{r['label']:<24}{num('samples_per_s'):>12}{num('step_ms_median', fmt='{:.2f}'):>10}"
        f"{num('compile_s', fmt='{:.2f}'):>10}{num('peak_bytes', 1e-9, '{:.2f}'):>9}"
        f"{num('compiled_temp_bytes', 1e-9, '{:.2f}'):>9}"
        f"{num('baseline_samples_per_s'):>11}{num('speedup', fmt='{:.2f}'):>8}"
    )
print("device:", next((json.loads(l).get("device") for l in open(sys.argv[1]) if '"device"' in l), "?"))
EOF
exit 0
