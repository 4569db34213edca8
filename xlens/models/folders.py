"""Model folders xlens writes into its cache (dequantized GGUF, tiny and random models): a marker file says a
folder is complete and what it holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def complete(folder: Path) -> bool:
    return (folder / "xlens.json").is_file()


def write_marker(folder: Path, **info: Any) -> None:
    (folder / "xlens.json").write_text(json.dumps(info, indent=2))
