"""A content-keyed artefact cache: each expensive result is stored once under a key of everything that made it.

An artefact is a folder ``<kind>-<key>`` built under a temporary name and renamed into place when complete, so a
kill at any point leaves it absent or whole, never half-written. It is never overwritten: a different input has a
different key. An artefact that fails to load (a corrupted file) is reported with its path, removed and computed
again.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from torch import Tensor

from xlens._io import atomic_folder, load_tensors, own_path, save_tensors
from xlens.errors import ArtifactError

T = TypeVar("T")


class CorruptArtifactWarning(UserWarning):
    """A cached artefact could not be read and is being recomputed."""


class ArtifactStore:
    """Artefacts of one run folder (or any cache folder) at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return own_path(self.root, f"{kind}-{key}")

    def folder(
        self,
        kind: str,
        key: str,
        compute: Callable[[], T],
        save: Callable[[T, Path], Any],
        load: Callable[[Path], T],
    ) -> T:
        """The artefact ``kind``/``key``: loaded when present and readable, else computed, saved and returned."""
        path = self.path(kind, key)
        if path.exists() and not path.is_dir():  # our name, taken by a file (a link was refused above)
            warnings.warn(f"recomputing a cache entry that is a file: {path}", CorruptArtifactWarning, stacklevel=2)
            path.unlink()
        if path.is_dir():
            try:
                return load(path)
            except ArtifactError as err:
                warnings.warn(f"recomputing a corrupted cache entry: {err}", CorruptArtifactWarning, stacklevel=2)
                shutil.rmtree(path)
        value = compute()
        with atomic_folder(path) as tmp:
            save(value, tmp)
        return value

    def tensors(self, kind: str, key: str, compute: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """Named tensors cached as ``<kind>-<key>/tensors.safetensors``."""
        return self.folder(
            kind,
            key,
            compute,
            lambda value, folder: save_tensors(folder / "tensors.safetensors", value),
            lambda folder: load_tensors(own_path(folder, "tensors.safetensors")),
        )

    def keep(self, kind: str, key: str, tensors: dict[str, Tensor]) -> Path:
        """Store already computed tensors as ``kind``/``key`` unless they are there; return their file."""
        if not self.path(kind, key).is_dir():
            with atomic_folder(self.path(kind, key)) as tmp:
                save_tensors(tmp / "tensors.safetensors", tensors)
        return self.tensor_file(kind, key)

    def tensor_file(self, kind: str, key: str) -> Path:
        """Where :meth:`tensors` keeps ``kind``/``key`` (for results that list their files)."""
        return self.path(kind, key) / "tensors.safetensors"
