"""Screenshots of the built docs site in headless Chromium (Playwright driving Debian's /usr/bin/chromium):
the home page and one API reference page, for the repository's assets/.

    mkdocs build --strict && python scripts/docs_screenshots.py build/site assets
"""

from __future__ import annotations

import argparse
import functools
import http.server
import threading
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGES = {"docs-home.png": "", "docs-api-interventions.png": "reference/interventions/"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="the built site (mkdocs build)")
    parser.add_argument("out", type=Path, help="where the PNG files go")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(args.site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for name, path in PAGES.items():
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/{path}")
                page.wait_for_load_state("networkidle")
                page.screenshot(path=args.out / name)
                print(f"wrote {args.out / name}")
            browser.close()
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
