"""A real Jupyter front end for the browser tests: a JupyterLab or Notebook 7 server on a free loopback port with a
token and a scratch root folder, and headless Debian Chromium driven by Playwright (no browser download).

The server runs with ``--expose-app-in-browser`` so that the tests drive the front end through its own command
registry (``window.jupyterapp``), the way the menus do; what they check is read from the page's DOM.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from xlens.viz.export import find_browser

Frontend = Literal["lab", "notebook"]
# Headless Chromium on a closed network: without the background-networking flags it keeps trying to reach Google.
CHROMIUM_FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
_KERNEL_IDLE = """() => {
  const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected';
}"""
# Runs every cell the way Run > Run All Cells does; the promise settles when the last cell has finished.
_RUN_ALL = """() => {
  window.__xlensRun = 'running';
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    ok => { window.__xlensRun = ok === false ? 'failed' : 'done'; },
    err => { window.__xlensRun = 'error: ' + err; });
}"""
_CELLS = """() => window.jupyterapp.shell.currentWidget.content.widgets
  .filter(cell => cell.model.type === 'code')
  .map(cell => ({
    count: cell.model.executionCount,
    errors: cell.model.outputs.toJSON().filter(o => o.output_type === 'error').map(o => o.ename + ': ' + o.evalue),
    text: (cell.node.querySelector('.jp-Cell-outputWrapper') || {innerText: ''}).innerText,
  }))"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JupyterServer:
    frontend: Frontend
    root: Path
    port: int
    token: str
    log: Path

    def url(self, notebook: str) -> str:
        path = f"lab/tree/{notebook}" if self.frontend == "lab" else f"notebooks/{notebook}"
        return f"http://127.0.0.1:{self.port}/{path}?token={self.token}"


@contextmanager
def jupyter_server(frontend: Frontend, root: Path, log: Path, timeout: float = 90.0) -> Iterator[JupyterServer]:
    """A Jupyter server serving ``root``; stopped (its whole process group) however the block ends."""
    jupyter = Path(sys.executable).with_name("jupyter")
    port, token = free_port(), secrets.token_hex(16)
    command = [
        str(jupyter),
        frontend,
        "--no-browser",
        "--allow-root",  # CI runs as root
        "--expose-app-in-browser",
        f"--port={port}",
        "--ServerApp.port_retries=0",  # the port chosen, or fail: never a surprise port
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
    ]
    # A fresh user: its own config and settings, with the "get notified about news?" toast answered (no).
    settings = root.parent / "lab-settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True, exist_ok=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root.parent / "jupyter-config"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(root.parent / "lab-workspaces"),
    }
    with log.open("w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter {frontend} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=2):
                    break
            except OSError as err:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"jupyter {frontend} did not answer in {timeout:.0f} s:\n{log.read_text()[-3000:]}"
                    ) from err
                time.sleep(0.3)
        yield JupyterServer(frontend, root, port, token, log)
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (server and kernels), SIGKILL what is left after 15 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(15)
    with contextlib.suppress(ProcessLookupError):  # kernels that outlived the server
        os.killpg(proc.pid, signal.SIGKILL)


def chromium_path() -> str:
    path = find_browser()
    if path is None:
        raise RuntimeError("the browser tests need Chromium: bash scripts/ci_system_deps.sh installs Debian's package")
    return path


@dataclass
class NotebookPage:
    """One notebook open in the front end, with every console error and uncaught exception of the page."""

    page: Any  # playwright.sync_api.Page
    console_errors: list[str] = field(default_factory=list)

    @classmethod
    def open(
        cls, browser: Any, server: JupyterServer, notebook: str, timeout_s: float = 120, height: int = 1100
    ) -> NotebookPage:
        page = browser.new_page(viewport={"width": 1500, "height": height})
        opened = cls(page)
        page.on("console", lambda m: m.type == "error" and opened.console_errors.append(m.text))
        page.on("pageerror", lambda e: opened.console_errors.append(f"uncaught: {e}"))
        page.goto(server.url(notebook))
        page.wait_for_function(_KERNEL_IDLE, timeout=timeout_s * 1000)
        return opened

    def run_all(self, timeout_s: float = 600) -> list[dict[str, Any]]:
        """Run every cell, wait for the last to finish and the kernel to be idle; the code cells' execution
        counts, error outputs and rendered output text."""
        self.page.evaluate(_RUN_ALL)
        self.page.wait_for_function("() => window.__xlensRun !== 'running'", timeout=timeout_s * 1000, polling=500)
        self.page.wait_for_function(_KERNEL_IDLE, timeout=60_000)
        state = self.page.evaluate("() => window.__xlensRun")
        cells = self.page.evaluate(_CELLS)
        if state not in ("done", "failed"):
            raise RuntimeError(f"Run All did not finish: {state}; cells: {json.dumps(cells)[:2000]}")
        return cells

    def screenshot(self, path: Path, selector: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        target = self.page.locator(selector).first if selector else self.page
        target.screenshot(path=str(path))
        return path


@contextmanager
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (``executable_path``: Playwright's own browsers are never used)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=list(CHROMIUM_FLAGS))
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir(default: Path) -> Path:
    """Where screenshots go: ``$XLENS_BROWSER_ARTIFACTS`` (CI keeps them) or the test's scratch folder."""
    folder = Path(os.environ.get("XLENS_BROWSER_ARTIFACTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
