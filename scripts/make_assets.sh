#!/usr/bin/env bash
# Regenerate the README's figures from a finished run: every figure as HTML (sharing one plotly.min.js beside them,
# so they open offline) and, where kaleido and Chrome/Chromium work, as PNG, into assets/.
# Japanese/Chinese/Korean tokens in the PNGs need CJK fonts where Chromium renders them (Debian/Ubuntu:
# apt-get install fonts-noto-cjk); the HTML figures use the viewer's fonts.
#   scripts/make_assets.sh [RUN_DIR (default runs/default)] [OUT_DIR (default assets)]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# Arguments are relative to where the script is called from; the defaults to the repository root.
run_dir=$(realpath -m "${1:-$root/runs/default}")
out_dir=$(realpath -m "${2:-$root/assets}")
cd "$root"
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python
[ -f "$run_dir/results.json" ] || { echo "no results.json in $run_dir: run \`xlens run --out $run_dir\` first" >&2; exit 1; }
"$python" - "$run_dir" "$out_dir" <<'PY'
import sys
from pathlib import Path

from xlens.report import write_figures
from xlens.viz.export import image_export_available

run_dir, out_dir = Path(sys.argv[1]), Path(sys.argv[2])
formats = ("html", "png") if image_export_available() else ("html",)
if "png" not in formats:
    print("kaleido or Chrome/Chromium not available: writing HTML figures only (see scripts/ci_system_deps.sh)")
for path in write_figures(run_dir, out_dir, formats):
    print(path)
PY
