#!/usr/bin/env bash
# System packages the tests need beyond Python: a Chrome/Chromium for kaleido (PNG/SVG figures) and for the
# browser tests (the HTML report, JupyterLab and Notebook 7), and on Debian the Noto CJK fonts, so that Japanese and
# Chinese tokens in screenshots and PNGs are characters, not boxes. Idempotent and quiet.
set -euo pipefail
have_browser=""
for browser in chromium chromium-browser google-chrome google-chrome-stable; do
    if command -v "$browser" >/dev/null 2>&1 && "$browser" --version >/dev/null 2>&1; then
        have_browser=1
    fi
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
debian=""
command -v apt-get >/dev/null 2>&1 && grep -qi debian /etc/os-release && ! grep -qi ubuntu /etc/os-release && debian=1
if [ -n "$debian" ]; then
    missing=""
    [ -n "$have_browser" ] || missing="chromium"
    dpkg -s fonts-noto-cjk >/dev/null 2>&1 || missing="$missing fonts-noto-cjk"
    [ -n "$missing" ] || exit 0
    # Debian ships a real Chromium package.
    $sudo apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
elif [ -n "$have_browser" ]; then
    exit 0
else
    # Ubuntu's chromium package is a snap stub that does not run in containers: fetch Chrome for Testing
    # through kaleido (needs kaleido installed, e.g. pip install -e '.[dev]', and network access).
    python=${PYTHON:-python}
    "$python" -c "import kaleido" 2>/dev/null || { echo "install kaleido first (pip install 'kaleido>=1')" >&2; exit 1; }
    "$python" -c "import kaleido; kaleido.get_chrome_sync()" >/dev/null
fi
