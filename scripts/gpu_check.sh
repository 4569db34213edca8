#!/usr/bin/env bash
# The GPU proof in one call: `xlens bench check` on a fresh GPU machine, from a checkout, with the packages that
# machine lacks carried as wheels. Writes gpu-<device>.json and its .log (e.g. gpu-h200.json), or
# gpu-check-error.json and .log when it cannot start.
#
# Whenever a GPU is lent (see DEVELOPERS.md), from the repository root:
#   1. here, where PyPI answers, right before the device call (~2.5 MB into the ignored folder .whl, with the commit
#      that will run in .whl/commit.txt, since the device copy has no .git):
#        bash scripts/gpu_check.sh --fetch-wheels
#   2. the device tool, unchanged (about 6 minutes on an H200, ~1 more to start the machine):
#        run(command="bash scripts/gpu_check.sh", carry=[".whl"], timeout_s=540)
#   3. copy what comes back into bench/ and commit it:
#        cp <files_at>/gpu-*.json <files_at>/gpu-*.log bench/
# On the CPU, the same steps with the smallest shapes (CI runs this; under 2 minutes on 2 cores):
#        bash scripts/gpu_check.sh --cpu
#
# The GPU machine has Python 3.12 with torch, transformers, accelerate, pandas, scikit-learn, pytest and the rest of
# xlens' needs, but not these (pure-Python wheels; multiprocess is built per Python version):
WHEELS=(transformer-lens==4.3.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19)
set -uo pipefail
cd "$(dirname "$0")/.."

mode=gpu
case "${1:-}" in
  "") ;;
  --cpu) mode=cpu ;;
  --fetch-wheels) mode=fetch ;;
  *) echo "usage: bash scripts/gpu_check.sh [--cpu | --fetch-wheels]" >&2; exit 2 ;;
esac

if [ "$mode" = fetch ]; then
  rm -rf .whl && mkdir -p .whl || exit 1
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${WHEELS[@]}" || exit 1
  git rev-parse HEAD > .whl/commit.txt 2>/dev/null && git diff --quiet HEAD 2>/dev/null || echo "+uncommitted" >> .whl/commit.txt
  du -sh .whl
  exit 0
fi

if [ "$mode" = cpu ]; then
  python=python3; [ -x .venv/bin/python ] && python=.venv/bin/python
  mkdir -p build/gpu-check
  exec "$python" -m xlens bench check --cpu --json build/gpu-check/gpu-cpu.json --force
fi

# GPU mode. The report goes to $XLENS_CHECK_DIR, else the device tool's $OUT (written after every row, so a run cut
# short still brings back what it measured), else bench/. Failures before the check starts get a JSON of their own.
dir=${XLENS_CHECK_DIR:-${OUT:-bench}}
mkdir -p "$dir"
fail() {
  echo "gpu_check: $1" | tee "$dir/gpu-check-error.log" >&2
  python3 -c 'import json, sys; json.dump({"benchmark": "gpu-check", "complete": True, "passed": False,
    "error": sys.argv[1]}, open(sys.argv[2], "w"), indent=2)' "$1" "$dir/gpu-check-error.json"
  exit 2
}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader \
  || fail "no NVIDIA GPU here (nvidia-smi missing or failing): run with --cpu on a machine without one"
missing=()
for spec in "${WHEELS[@]}"; do
  name=${spec%%==*}; version=${spec##*==}
  ls .whl/"${name//-/_}"-"$version"-*.whl >/dev/null 2>&1 || missing+=("$spec")
done
[ ${#missing[@]} -eq 0 ] || fail "missing carried wheels ${missing[*]}: run 'bash scripts/gpu_check.sh --fetch-wheels' where PyPI is reachable and carry .whl"
site=/tmp/xlens-site
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl \
  || fail "pip could not install the carried wheels (.whl): see the output above"
commit=$(git rev-parse HEAD 2>/dev/null || paste -sd' ' .whl/commit.txt 2>/dev/null || echo unknown)
# Offline, and float32 in full precision whatever the image sets (TF32 would miss the float32 tolerances).
export PYTHONPATH="$PWD:$site" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 NVIDIA_TF32_OVERRIDE=0
unset TORCH_ALLOW_TF32_CUBLAS_OVERRIDE
# An import that fails here (a package the machine lacks) is one line, not a run without a report.
python3 -c "import xlens.bench.check" > "$dir/gpu-check-import.log" 2>&1 \
  || fail "xlens.bench.check does not import: $(tail -1 "$dir/gpu-check-import.log")"
rm -f "$dir/gpu-check-import.log"
# Rows that would start after 420 s are skipped; a row still running at 500 s is cut (the report then says
# complete: false), inside the device tool's 540 s.
started=$(mktemp)
timeout 500 python3 -m xlens bench check --force --commit "$commit" --json-dir "$dir" --budget-s 420
status=$?
[ $status -eq 124 ] && echo "gpu_check: cut at 500 s; the report holds the rows finished before it (complete: false)"
[ -n "$(find "$dir" -maxdepth 1 -name 'gpu-*.json' ! -name gpu-check-error.json -newer "$started")" ] \
  || fail "xlens bench check exited with $status before writing its report: see the output above"
exit $status
