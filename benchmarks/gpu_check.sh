#!/usr/bin/env bash
# The GPU measurement (issue 29) as one script, for a machine with one CUDA GPU that reaches no package registry,
# in about 8 minutes (TOTAL_S; each step is cut at what is left):
#   1. installs what is not importable yet from benchmarks/.gpu-wheels (built by build_gpu_wheelhouse.sh and carried
#      there), then augbench itself (pip install --no-deps --no-build-isolation: on PYTHONPATH instead, the source
#      tree would hide the installed configs);
#   2. benchmarks/pretrain_throughput.py --device cuda: MoCo v2 and BYOL, ResNet-18 with the CIFAR stem, width 1.0,
#      32 px, batch 512, bf16 autocast, against lightly's loop (DataLoader workers: the machine's cores, pinned memory);
#   3. `augbench pretrain` of both presets over configs/quickstart.yaml at width 1.0 and batch 512, its images/s read
#      from its log (train/images_per_s);
#   4. `augbench quickstart`, timed;
#   5. the GPU tests (pytest -m gpu tests/train/test_gpu.py);
# then writes the GPU section of benchmarks/RESULTS.md, and copies it with every log to $OUT when set (the device
# tool's output folder). A step that fails or runs out of time is reported as such; the next ones still run.
# Usage: benchmarks/gpu_check.sh
#   PYTHON=python3   the interpreter (default: python3)
#   SMOKE=1          tiny sizes on the CPU, no installation: checks the script itself on a machine without a GPU
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-benchmarks/.gpu-wheels}
TOTAL_S=${TOTAL_S:-480}
SMOKE=${SMOKE:-0}
WORK=${WORK:-runs/gpu-check}
LOGS=$WORK/logs
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
rm -rf "$WORK"
mkdir -p "$LOGS"
STARTED=$(date +%s)

if [ "$SMOKE" = 1 ]; then
  DEVICE=cpu
  BENCH_ARGS=(--sizes 32 --batch 16 --width 0.125 --warmup 1 --steps 2 --precisions fp32 --lightly-workers 1)
  PRETRAIN_ARGS=(model.width=0.125 trainer.batch_size=16 data.train_size=64 trainer.max_steps=6 trainer.max_epochs=2
                 trainer.log_every_n_steps=1 trainer.accelerator=cpu trainer.progress_bar=false)
  QUICKSTART_ARGS=(data.train_size=64 data.val_size=32 data.test_size=32 trainer.batch_size=16 trainer.max_epochs=1
                   model.width=0.125)
  TEST_ARGS=(tests/train/test_gpu.py)
else
  DEVICE=cuda
  BENCH_ARGS=(--sizes 32 --batch 512 --width 1.0 --warmup 5 --steps 25 --rounds 1 --precisions bf16)
  PRETRAIN_ARGS=(model.width=1.0 trainer.batch_size=512 trainer.max_steps=200 trainer.progress_bar=false)
  QUICKSTART_ARGS=()
  TEST_ARGS=(-m gpu tests/train/test_gpu.py)
fi

left() { echo $((TOTAL_S - ($(date +%s) - STARTED))); }

# step NAME LIMIT_S COMMAND...: runs COMMAND under min(LIMIT_S, time left), its output in $LOGS/NAME.log; records
# "NAME STATUS SECONDS" in $LOGS/steps.txt (STATUS: ok, failed (exit N), timed out, skipped).
step() {
  local name=$1 limit=$2
  shift 2
  local budget
  budget=$(left)
  [ "$budget" -lt "$limit" ] && limit=$budget
  if [ "$limit" -le 5 ]; then
    echo "$name skipped 0" >> "$LOGS/steps.txt"
    echo "== $name: skipped (no time left)"
    return
  fi
  echo "== $name (at most ${limit} s)"
  local begin status
  begin=$(date +%s)
  # In a new bash, given this script's settings and functions, since `timeout` runs programs, not functions.
  timeout --kill-after=10 "$limit" bash -c "$(declare -p PYTHON WHEELS WORK SMOKE PRETRAIN_ARGS QUICKSTART_ARGS); \
$(declare -f install pretrain_run augbench_cli quickstart_run); \"\$@\"" _ "$@" > "$LOGS/$name.log" 2>&1
  status=$?
  local seconds=$(($(date +%s) - begin))
  case $status in
    0) echo "$name ok $seconds" >> "$LOGS/steps.txt" ;;
    124 | 137) echo "$name timed-out $seconds" >> "$LOGS/steps.txt" ;;
    *) echo "$name failed(exit-$status) $seconds" >> "$LOGS/steps.txt" ;;
  esac
  tail -n 5 "$LOGS/$name.log"
}

install() {
  # import name:requirement, in dependency order; only what is not importable is installed, from the wheelhouse.
  local wanted=(setuptools:setuptools antlr4:antlr4-python3-runtime omegaconf:omegaconf hydra:hydra-core
                kornia_rs:kornia_rs kornia:kornia annotated_types:annotated-types typing_inspection:typing-inspection
                pydantic_core:pydantic_core pydantic:pydantic lightly:lightly iniconfig:iniconfig pluggy:pluggy
                pytest:pytest)
  local missing=()
  for entry in "${wanted[@]}"; do
    "$PYTHON" -c "import ${entry%%:*}" 2> /dev/null || missing+=("${entry#*:}")
  done
  echo "missing: ${missing[*]:-nothing}"
  if [ ${#missing[@]} -gt 0 ]; then
    "$PYTHON" -m pip install --no-index --no-deps --find-links "$WHEELS" "${missing[@]}" || return 1
  fi
  "$PYTHON" -m pip install --no-deps --no-build-isolation . || return 1
  (cd /tmp && "$PYTHON" -c "import augbench, lightly, kornia, omegaconf; from augbench.config import shipped_config; \
print('augbench', augbench.__version__, 'from', augbench.__file__); print(shipped_config('quickstart.yaml'))")
}

pretrain_run() {
  local preset=$1
  augbench_cli pretrain "configs/methods/$preset.yaml" configs/quickstart.yaml "name=$preset" "output_dir=$WORK/runs" \
    "${PRETRAIN_ARGS[@]}"
}

augbench_cli() {
  if [ "$SMOKE" = 1 ]; then "$PYTHON" -m augbench.cli "$@"; else augbench "$@"; fi
}

quickstart_run() {
  local begin
  begin=$(date +%s%N)
  augbench_cli quickstart --output-dir "$WORK/quickstart" "${QUICKSTART_ARGS[@]}" || return 1
  echo "quickstart wall: $((($(date +%s%N) - begin) / 1000000)) ms"
}

"$PYTHON" - > "$LOGS/machine.log" <<'PY'
import os, platform, torch
print(f"Python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"{len(os.sched_getaffinity(0))} CPU cores")
if torch.cuda.is_available():
    properties = torch.cuda.get_device_properties(0)
    print(f"{properties.name}, {properties.total_memory / 2**30:.0f} GiB")
else:
    print("no CUDA GPU")
PY
cat "$LOGS/machine.log"
if [ "$SMOKE" != 1 ]; then
  step install 90 install
fi
step throughput 150 "$PYTHON" benchmarks/pretrain_throughput.py --device "$DEVICE" "${BENCH_ARGS[@]}"
step pretrain_moco_v2 75 pretrain_run moco_v2
step pretrain_byol 75 pretrain_run byol
step quickstart 150 quickstart_run
step gpu_tests 120 "$PYTHON" -m pytest -q -p no:cacheprovider -rs "${TEST_ARGS[@]}"

# The smoke run writes its section beside its logs, not into the tracked RESULTS.md.
RESULTS=benchmarks/RESULTS.md
[ "$SMOKE" = 1 ] && RESULTS=$WORK/RESULTS.md && cp benchmarks/RESULTS.md "$RESULTS"
"$PYTHON" benchmarks/gpu_results.py "$WORK" "$RESULTS"
if [ -n "${OUT:-}" ]; then
  cp -r "$LOGS" "$OUT/gpu-check-logs"
  cp "$RESULTS" "$OUT/RESULTS.md"
fi
echo "total: $(($(date +%s) - STARTED)) s"
