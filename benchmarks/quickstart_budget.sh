#!/usr/bin/env bash
# Wall time and peak RSS of `augbench quickstart` on a fresh output directory, against the budget of
# 10 minutes and 4 GB. GNU time measures when it is installed; otherwise Python's resource module does
# (the peak RSS of the largest child process, as GNU time reports it).
# Usage: benchmarks/quickstart_budget.sh [OUTPUT_DIR]   (PYTHON=path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUTPUT_DIR=${1:-runs/bench-quickstart}
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
rm -rf "$OUTPUT_DIR"

if [ -x /usr/bin/time ]; then
  /usr/bin/time -v -o "$LOG" "$PYTHON" -m augbench.cli quickstart --output-dir "$OUTPUT_DIR" > /dev/null
  seconds=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s}' "$LOG")
  peak_kb=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$LOG")
  tool="GNU time"
else
  read -r seconds peak_kb < <("$PYTHON" - "$PYTHON" "$OUTPUT_DIR" <<'PY'
import resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run([sys.argv[1], "-m", "augbench.cli", "quickstart", "--output-dir", sys.argv[2]],
               check=True, stdout=subprocess.DEVNULL)
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)
  tool="Python resource"
fi

"$PYTHON" - "$seconds" "$peak_kb" "$tool" <<'PY'
import sys
seconds, peak_gb, tool = float(sys.argv[1]), int(sys.argv[2]) / 1024**2, sys.argv[3]
print(f"augbench quickstart ({tool}): wall {seconds / 60:.1f} min ({seconds:.0f} s), peak RSS {peak_gb:.2f} GB")
print(f"ratio to budget: wall {seconds / 600:.2f} of 10 min, peak RSS {peak_gb / 4:.2f} of 4 GB")
PY
