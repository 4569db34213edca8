"""Files that are never half-written, artefacts that say where they are broken, and the one cache-key function.

Every write goes to a temporary sibling named after the writing process (``.NAME.tmp-PID`` for files,
``.tmp-NAME-PID-XXXX`` for folders) and is moved into place when complete, so a kill at any point leaves either
the old file or the new one. :func:`remove_stale_temporaries` deletes what killed writers left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from torch import Tensor

from xlens.errors import ArtifactError, RunFolderError, XlensError

_TEMP = re.compile(r"^\.(?:.+\.tmp-(?P<pid>\d+)|tmp-.+-(?P<dir_pid>\d+)-[^-]+)$")


def content_key(*parts: Any) -> str:
    """A short hex key of JSON-able ``parts``: the one function every cache key in xlens is made with."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def produced_by(commit: str | None = None) -> dict[str, str]:
    """The command line and the git commit that write a result file, so that the docs can name both. Outside a git
    checkout the commit is the installed xlens version."""
    if commit is None:
        try:
            head = subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False, cwd=Path(__file__).parent
            )
            commit = head.stdout.strip() if head.returncode == 0 else None
        except OSError:
            commit = None
    return {"command": shlex.join(["xlens", *sys.argv[1:]]), "commit": commit or f"xlens {metadata.version('xlens')}"}


def own_path(root: Path, name: str | os.PathLike[str]) -> Path:
    """``root / name``, for a name xlens gives its own files in a folder it owns (a run folder, a cache): a relative
    path that stays inside ``root`` (no ``..``, not absolute) and whose parts under ``root`` are real files and
    folders, never symbolic links. A folder may come from someone else, and its links could point anywhere: xlens
    writes, locks, replaces, deletes and reads its own names only, and never through a link."""
    relative = Path(name)
    if relative.is_absolute() or not relative.parts or any(part in ("..", ".") for part in relative.parts):
        raise RunFolderError(f"{str(name)!r} is not a name inside {root}: xlens only touches its own files there")
    path = root
    for part in relative.parts:
        path = path / part
        if path.is_symlink():
            raise RunFolderError(
                f"{path} is a symbolic link: xlens does not follow links inside a folder it owns (one from someone "
                "else may point anywhere); remove the link, or use another folder"
            )
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(target: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary sibling of ``target``, then move it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # whatever sits at our temporary's name (a planted link) goes, unfollowed
    try:
        write(tmp)
        os.replace(tmp, target)
    except OSError as err:
        if err.filename is None:  # a failed write (a full disk) says the file it was writing
            raise OSError(err.errno, err.strerror or str(err), str(target)) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(target: Path, payload: Any) -> None:
    atomic_write(target, lambda p: p.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8"))


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Build a folder under a temporary name and move it into place only when complete.

    ``target`` must not exist yet (artefacts are keyed by content, so an existing one is already complete); if
    another process commits it first, this one's copy is discarded.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-{os.getpid()}-", dir=target.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(tmp)  # another process finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path, *, all_writers: bool = False) -> list[Path]:
    """Delete temporaries under ``folder`` that no running writer owns; return what was removed.

    With ``all_writers`` (the caller holds the folder's lock, so no one else writes there), every temporary is
    stale; otherwise only those whose writing process is gone.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for parent, dirs, files in os.walk(folder):  # links to folders are listed, never entered
        for name in [*dirs, *files]:
            match = _TEMP.match(name)
            if match is None:
                continue
            path = Path(parent) / name
            pid = int(match.group("pid") or match.group("dir_pid"))
            if all_writers or not _alive(pid):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)  # a file, or a link (removed, not followed)
                removed.append(path)
        dirs[:] = [d for d in dirs if _TEMP.match(d) is None]
    return removed


def load_tensors(path: Path) -> dict[str, Tensor]:
    """A safetensors file's tensors; a missing or corrupted file raises ArtifactError naming it and the fix."""
    from safetensors.torch import load_file

    with _safetensors_errors(path):
        return load_file(str(path))


def check_tensors(path: Path) -> None:
    """That a safetensors file reads back: its header, checked against the file's length (a file cut short,
    emptied or overwritten fails), without loading the tensors; ArtifactError as :func:`load_tensors`."""
    from safetensors import safe_open

    with _safetensors_errors(path), safe_open(str(path), "pt") as f:
        f.keys()


@contextlib.contextmanager
def _safetensors_errors(path: Path) -> Iterator[None]:
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        yield
    except Exception as err:  # safetensors raises its own SafetensorError without the file name
        raise ArtifactError(
            f"{path} is corrupted ({type(err).__name__}: {err}); delete it and rerun to recompute it"
        ) from err


def save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    atomic_write(path, lambda p: save_file({k: v.contiguous() for k, v in tensors.items()}, str(p)))


def read_json(path: Path) -> Any:
    """A JSON file's content; a missing or corrupted file raises ArtifactError naming it."""
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(f"{path} is corrupted ({err}); delete it and rerun to recompute it") from err


def write_pair(folder: Path, stem: str, tensors: dict[str, Tensor], header: dict[str, Any]) -> None:
    """Save tensors and their JSON header as one artefact in ``folder``, committed by the header.

    The tensors go to a new file named after their content (``STEM-HASH.safetensors``); ``STEM.json``, written
    last and atomically, names it. A kill at any point leaves the old pair or the new one, never a mix; the
    tensors of the pair that was replaced are removed afterwards.
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{stem}.staged.tmp-{os.getpid()}"
    staged.unlink(missing_ok=True)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(staged))
        name = f"{stem}-{sha256_file(staged)[:16]}.safetensors"
        os.replace(staged, folder / name)
    finally:
        staged.unlink(missing_ok=True)
    write_json(folder / f"{stem}.json", {**header, "tensors": name})
    for old in folder.glob(f"{stem}-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def read_pair(folder: Path, stem: str, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and header :func:`write_pair` saved; ArtifactError names the file when one is missing, broken
    or of another kind."""
    meta = own_path(folder, f"{stem}.json")
    if not meta.is_file():
        raise ArtifactError(f"no {kind} in {folder}: expected {meta.name}")
    header = read_json(meta)
    if not isinstance(header, dict) or header.get("kind") != kind:
        found = header.get("kind") if isinstance(header, dict) else type(header).__name__
        raise ArtifactError(f"{meta} holds a {found!r}, not a {kind}")
    # Files written before the header named its tensors used one fixed name; the name is checked to be one of
    # write_pair's, so that a header from someone else cannot point the read anywhere else.
    name = header.get("tensors", f"{stem}.safetensors")
    if not isinstance(name, str) or re.fullmatch(rf"{re.escape(stem)}(?:-[0-9a-f]{{16}})?\.safetensors", name) is None:
        raise ArtifactError(f"{meta} names tensors {name!r}, not a file write_pair writes; delete it and rerun")
    return load_tensors(own_path(folder, name)), header


@contextlib.contextmanager
def reading(path: Path) -> Iterator[None]:
    """Inside, an artefact that lacks what its loader expects raises ArtifactError naming ``path`` and the fix."""
    try:
        yield
    except XlensError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ArtifactError(
            f"{path} does not hold a complete artefact ({type(err).__name__}: {err}); delete it and rerun to "
            "recompute it"
        ) from err
