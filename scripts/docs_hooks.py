"""MkDocs hooks: fail the build on an undocumented public name, and serve the repository's assets/ and notebooks/.

The figures and notebooks live at the top of the repository (the README and Jupyter use them there); the site
serves the same files at `assets/` and `notebooks/` instead of keeping copies under docs/.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DIRECTIVE = re.compile(r"<p>\.\. code-block:: \w+</p>")
LITERAL = re.compile(r"::</p>")
ROOT = Path(__file__).resolve().parent.parent
SERVED = ("assets", "notebooks")
# A role and a `~` that asks for the last component only: `:class:`~xlens.errors.InputError`` shows `InputError`.
ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|exc|obj):(<code[^>]*>)(?:~(?:\w+\.)*)?")

sys.path.insert(0, str(ROOT / "scripts"))
from render_docs import undocumented  # noqa: E402


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    missing = undocumented()
    if missing:
        raise PluginError(f"public names without a docstring: {', '.join(missing)}: document them in the code")
    return config


def on_page_content(html: str, **_: object) -> str:
    """Docstrings are written in reStructuredText: show a role's name alone (``:func:`load_model` ``), and a
    literal block's ``::`` or ``.. code-block::`` as the code block Markdown already makes of its indented lines."""
    html = ROLE.sub(r"\1", html)
    return LITERAL.sub(":</p>", DIRECTIVE.sub("", html))


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for folder in SERVED:
        for path in sorted((ROOT / folder).iterdir()):
            if path.is_file():
                uri = f"{folder}/{path.name}"
                files.append(File(uri, str(ROOT), config.site_dir, config.use_directory_urls))
    return files
