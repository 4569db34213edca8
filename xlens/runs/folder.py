"""A run folder owns its files: one config per folder, one process at a time, every write committed whole.

- ``run.json`` records what the folder is for (its kind and config, with a fingerprint). Reusing the folder with
  the same config resumes; another config is refused with the differences named, unless ``force`` (then the old
  results are removed first; the content-keyed cache stays, since its keys cannot match the wrong inputs).
- ``.lock`` is held (``flock``) while a process works in the folder: a second process fails at once, naming the
  holder. The lock goes with the process, so a killed run never leaves the folder locked.
- ``cache/`` holds content-keyed artefacts (:class:`xlens.artifacts.ArtifactStore`).
- Temporaries left by killed writers are removed when the folder is opened.

A run folder may come from someone else: xlens touches only its own names in it, never through a symbolic link
(:func:`xlens._io.own_path`), whatever ``run.json`` says (see ``SECURITY.md``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from xlens._io import (
    atomic_write,
    content_key,
    own_path,
    read_json,
    remove_stale_temporaries,
    sha256_file,
    write_json,
)
from xlens._schema import flatten
from xlens.artifacts import ArtifactStore
from xlens.errors import ArtifactError, RunFolderError

OWNER = "run.json"
LOCK = ".lock"
CACHE = "cache"


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every dotted key whose value differs (``(default)`` where a key is absent)."""
    a, b = flatten(old), flatten(new)
    return [
        f"{key}: {a.get(key, '(default)')!r} -> {b.get(key, '(default)')!r}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    ]


class RunFolder:
    """A folder owned by one run of one kind (``experiment``, ``experts``); open it with :meth:`open`."""

    def __init__(self, path: str | os.PathLike[str], kind: str, outputs: tuple[str, ...]) -> None:
        self.path = Path(path)
        self.kind = kind
        self.outputs = outputs  # the files and folders a run of this kind writes (what force removes)

    @property
    def artifacts(self) -> ArtifactStore:
        return ArtifactStore(own_path(self.path, CACHE))

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        path: str | os.PathLike[str],
        kind: str,
        config: Mapping[str, Any],
        *,
        outputs: tuple[str, ...],
        force: bool = False,
    ) -> Iterator[RunFolder]:
        """Lock the folder, check (or take) ownership for ``config``, and clean up after killed writers."""
        folder = cls(path, kind, outputs)
        if folder.path.exists() and not folder.path.is_dir():
            raise RunFolderError(f"{folder.path} is a file, not a folder: choose another output folder")
        folder.path.mkdir(parents=True, exist_ok=True)
        with folder._locked():
            remove_stale_temporaries(folder.path, all_writers=True)
            folder._claim(dict(config), force)
            yield folder

    @classmethod
    @contextlib.contextmanager
    def writing(cls, path: str | os.PathLike[str]) -> Iterator[RunFolder]:
        """Hold an existing run folder's lock while writing something derived into it (a report, figures)."""
        folder = cls(path, "any", ())
        if not (folder.path / OWNER).is_file():
            raise RunFolderError(f"{folder.path} holds no xlens run (no {OWNER})")
        with folder._locked():
            yield folder

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:  # O_NOFOLLOW: a link planted as the lock file is refused, not truncated through
            fd = os.open(own_path(self.path, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            raise RunFolderError(f"cannot lock {self.path / LOCK} ({err}): remove it, or use another folder") from err
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 4096).decode(errors="replace").strip() or "unknown"
                raise RunFolderError(
                    f"{self.path} is in use by another xlens process ({holder}): wait for it to finish, or write "
                    "to another folder"
                ) from None
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _claim(self, config: dict[str, Any], force: bool) -> None:
        owner = own_path(self.path, OWNER)
        record = {
            "kind": self.kind,
            "fingerprint": content_key(self.kind, config),
            "config": config,
            "outputs": list(self.outputs),
        }
        saved: dict[str, Any] = {}
        if owner.is_file():
            try:
                saved = read_json(owner)
                if not isinstance(saved, dict):
                    raise ArtifactError(f"{owner} holds a {type(saved).__name__}, not an owner record")
            except ArtifactError as err:
                saved = {}
                if not force:
                    raise RunFolderError(f"{err}; pass --force (force=True) to claim the folder anew") from err
            if saved.get("kind") == self.kind and saved.get("fingerprint") == record["fingerprint"]:
                return  # the same run: resume
            if saved and not force:
                if saved.get("kind") != self.kind:
                    why = f"it holds an `xlens {saved.get('kind')}` output, not an `xlens {self.kind}` one"
                else:
                    why = "it was made with another config: " + "; ".join(
                        config_differences(saved.get("config", {}), config)
                    )
                raise RunFolderError(
                    f"{self.path} belongs to another run ({why}). Rerun with --force (force=True) to replace its "
                    "results, or choose another output folder"
                )
        elif not force:
            foreign = sorted(p.name for p in self.path.iterdir() if p.name not in (LOCK, CACHE))
            if foreign:
                raise RunFolderError(
                    f"{self.path} already holds files that no xlens run of this version owns ({', '.join(foreign[:5])}"
                    f"{', ...' if len(foreign) > 5 else ''}): choose an empty or new folder, or pass --force "
                    "(force=True) to replace them"
                )
        # Replacing: the previous owner's outputs go, whatever kind of run it was; the content-keyed cache stays.
        for name in sorted({*_names(saved.get("outputs", []), owner), *self.outputs, OWNER}):
            _remove(self.path, name)
        write_json(owner, record)

    def commit(self, manifest: str, payload: dict[str, Any], tables: Mapping[str, Any]) -> None:
        """Write pandas ``tables`` as parquet files, then ``manifest`` (JSON) last, recording each table's sha256:
        a reader can tell tables that do not belong to the manifest (a kill between the writes)."""
        files = {}
        for name, frame in tables.items():
            target = own_path(self.path, f"{name}.parquet")
            atomic_write(target, lambda p, f=frame: f.to_parquet(p, index=False))
            files[name] = {"file": target.name, "sha256": sha256_file(target)}
        write_json(own_path(self.path, manifest), {**payload, "tables": files})


def _names(outputs: Any, owner: Path) -> list[str]:
    """The output names a run folder's owner record lists, each a plain name inside the folder (the record may
    come from someone else)."""
    names = outputs if isinstance(outputs, list) else [outputs]
    bad = [n for n in names if not isinstance(n, str) or Path(n).name != n or n in ("", ".", "..", CACHE, LOCK)]
    if bad:
        raise RunFolderError(
            f"{owner} lists outputs {bad[:3]} that are not xlens's names inside the folder (a tampered record?): "
            "xlens removes nothing for it; use another folder"
        )
    return names


def _remove(folder: Path, name: str) -> None:
    """Remove ``folder/name`` (a link is removed, never followed)."""
    target = folder / name
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


def read_manifest(path: Path, manifest: str) -> dict[str, Any]:
    """A run folder's manifest, with its tables checked against the hashes it records."""
    data = read_json(own_path(path, manifest))
    for name, entry in data.get("tables", {}).items():
        file = own_path(path, entry["file"])
        if not file.is_file() or sha256_file(file) != entry["sha256"]:
            raise ArtifactError(
                f"{file} does not match {path / manifest} (an interrupted write?): run the same command again to "
                f"rewrite the {name} table"
            )
    return data
