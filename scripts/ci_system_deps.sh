#!/usr/bin/env bash
# System packages the tests need beyond Python: a Chrome/Chromium for kaleido (PNG/SVG figures) and for the
# headless-browser check of the HTML report. Idempotent and quiet; does nothing when a browser is already there.
set -euo pipefail
for browser in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$browser" >/dev/null 2>&1 && "$browser" --version >/dev/null 2>&1; then
        exit 0
    fi
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if command -v apt-get >/dev/null 2>&1 && grep -qi debian /etc/os-release && ! grep -qi ubuntu /etc/os-release; then
    # Debian ships a real Chromium package.
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
    # Ubuntu's chromium package is a snap stub that does not run in containers: fetch Chrome for Testing
    # through kaleido (needs kaleido installed, e.g. pip install -e '.[dev]', and network access).
    python=${PYTHON:-python}
    "$python" -c "import kaleido" 2>/dev/null || { echo "install kaleido first (pip install 'kaleido>=1')" >&2; exit 1; }
    "$python" -c "import kaleido; kaleido.get_chrome_sync()" >/dev/null
fi
