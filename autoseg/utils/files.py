"""Atomic file writing and JSON helpers.

Every file autoseg produces is first written under a temporary name in the same
folder and then renamed with :func:`os.replace`, which is atomic on POSIX and
Windows: a reader (or a resumed run) sees either the old file or the complete new
one, never a half-written file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.utils.processes import ProcessIdentity


def full_suffix(path: Path, known_endings: tuple[str, ...] = (".nii.gz", ".tar.gz")) -> str:
    """Return the file ending of ``path`` including double endings like ``.nii.gz``."""
    name = path.name.lower()
    for ending in known_endings:
        if name.endswith(ending):
            return path.name[-len(ending):]
    return path.suffix


#: A temporary file's name: ``.{stem}.tmp-{host}-{pid}-{8 hex digits}{ending}``.
TEMPORARY_NAME = re.compile(r"^\..*\.tmp-(?P<host>[A-Za-z0-9_-]+)-(?P<pid>\d+)-[0-9a-f]{8}(\.[^/]*)?$")


#: Longest file name most file systems hold (bytes); a temporary name is kept within it.
MAX_NAME_BYTES = 255


def temporary_name(target: Path) -> Path:
    """A temporary path beside ``target`` naming this machine and process, with ``target``'s ending.

    The name is kept within :data:`MAX_NAME_BYTES`: a long ``target`` name (legal itself) has its
    stem shortened in the temporary name only."""
    ending = full_suffix(target)
    stem = target.name[: len(target.name) - len(ending)] if ending else target.name
    me = ProcessIdentity.current()
    tail = f".tmp-{me.host}-{me.pid}-{uuid.uuid4().hex[:8]}{ending}"
    room = MAX_NAME_BYTES - 1 - len(tail.encode())
    stem = stem.encode("utf-8", "surrogateescape")[: max(room, 1)].decode("utf-8", "ignore") or "_"
    return target.with_name(f".{stem}{tail}")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files under ``folder`` (recursively) left by processes of this machine that
    no longer run (a killed run); returns them. Another machine's temporaries are left alone."""
    removed = []
    for directory, _, names in os.walk(folder):
        for name in names:
            match = TEMPORARY_NAME.match(name)
            if match and ProcessIdentity(match["host"], int(match["pid"])).is_running() is False:
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed


#: Where autoseg keeps what it can rebuild (opened model bundles, exported networks, backend
#: timings) when the AUTOSEG_CACHE environment variable does not say.
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "autoseg"


def cache_dir() -> Path:
    """``$AUTOSEG_CACHE``, else :data:`DEFAULT_CACHE_DIR`."""
    return Path(os.environ.get("AUTOSEG_CACHE") or DEFAULT_CACHE_DIR)


#: errno values meaning the disk (or the user's quota) is full.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def size_text(num_bytes: float) -> str:
    """``num_bytes`` in kB, MB or GB, for messages."""
    if num_bytes >= 2**30:
        return f"{num_bytes / 2**30:.1f} GB"
    return f"{num_bytes / 2**20:.0f} MB" if num_bytes >= 2**20 else f"{max(num_bytes / 2**10, 1):.0f} kB"


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free space (bytes) on the file system holding ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def os_error_message(error: OSError, path: str | os.PathLike | None = None, needed_bytes: int | None = None) -> str:
    """One line naming the file and what to do, for an :class:`OSError` (disk full, read-only, ...)."""
    where = path or error.filename or "(unknown file)"
    if error.errno in DISK_FULL_ERRNOS:
        free = free_bytes(where)
        needed = f", about {size_text(needed_bytes)} needed for this file" if needed_bytes else ""
        return (f"{where}: disk full while writing it ({size_text(free) if free is not None else 'unknown'} free"
                f"{needed}); free some space and run the same command again: finished work is kept")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{where}: cannot write here ({error.strerror}); choose a folder you can write to"
    return f"{where}: {error.strerror or error}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed_bytes: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the file ending (libraries such as SimpleITK and numpy
    choose the format from it) and names this process (:func:`temporary_name`), so that a
    later run can remove what a killed one left (:func:`remove_stale_temporaries`). On an
    exception the temporary file is removed and ``path`` is left untouched; a full disk
    becomes a one-line :class:`AutosegInputError` naming ``path``, the free space and
    ``needed_bytes`` (the file's expected size, where the caller knows it).
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AutosegInputError(os_error_message(error, target.parent)) from None
    temporary = temporary_name(target)
    try:
        yield temporary
        os.replace(temporary, target)
    except OSError as error:
        if error.errno in DISK_FULL_ERRNOS or error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise AutosegInputError(os_error_message(error, target, needed_bytes)) from None
        raise
    finally:
        with contextlib.suppress(OSError):
            if temporary.exists():
                temporary.unlink()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def to_json_text(data: Any, indent: int | None = 2, inline_width: int = 100) -> str:
    """JSON text that stays readable: objects indented, short lists kept on one line.

    ``indent=None`` gives compact single-line JSON.
    """
    if indent is None:
        return json.dumps(data, default=_json_default, separators=(",", ":"))

    def render(value: Any, level: int) -> str:
        if isinstance(value, dict):
            if not value:
                return "{}"
            pad = " " * (indent * (level + 1))
            items = [f"{pad}{json.dumps(str(key))}: {render(item, level + 1)}" for key, item in value.items()]
            return "{\n" + ",\n".join(items) + "\n" + " " * (indent * level) + "}"
        if isinstance(value, (list, tuple, np.ndarray)):
            flat = json.dumps(value, default=_json_default)
            if len(flat) <= inline_width or not any(isinstance(v, (dict, list, tuple)) for v in value):
                return flat
            pad = " " * (indent * (level + 1))
            items = [pad + render(item, level + 1) for item in value]
            return "[\n" + ",\n".join(items) + "\n" + " " * (indent * level) + "]"
        return json.dumps(value, default=_json_default)

    return render(data, 0)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str | os.PathLike, data: Any, indent: int | None = 2) -> None:
    """Write ``data`` as JSON (see :func:`to_json_text`), atomically.

    numpy scalars and arrays are converted to plain numbers and lists.
    """
    text = to_json_text(data, indent)
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def read_json_input(path: str | os.PathLike, missing: str = "file not found", what: str = "JSON",
                    expect: type | tuple[type, ...] | None = None) -> Any:
    """Read a JSON file the user gave or autoseg wrote; one-line :class:`AutosegInputError` naming it otherwise.

    ``missing`` is the message when the file does not exist (say what to run or provide);
    ``expect`` the type(s) the top-level value must have.
    """
    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: {missing}")
    try:
        data = read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AutosegInputError(f"{path}: invalid {what} ({error})") from None
    if expect is not None and not isinstance(data, expect):
        names = " or ".join(t.__name__ for t in (expect if isinstance(expect, tuple) else (expect,)))
        readable = {"dict": "a JSON object", "list": "a JSON list"}
        raise AutosegInputError(f"{path}: expected {readable.get(names, names)}")
    return data


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save an uncompressed ``.npy`` file (memory-mappable), atomically."""
    with atomic_path(path, needed_bytes=array.nbytes) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, np.ascontiguousarray(array))


#: zlib level of ``.npz`` files: level 1 writes float16 probabilities about 3x faster than
#: ``np.savez_compressed``'s default (6) at nearly the same size (BENCHMARKS.md,
#: "What validation costs inside a budget").
NPZ_COMPRESS_LEVEL = 1


def save_npz_compressed(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save a compressed ``.npz`` file (what ``np.load`` reads; no pickles), atomically.

    Written member by member as ``np.savez_compressed`` does, but at :data:`NPZ_COMPRESS_LEVEL`.
    """
    with atomic_path(path, needed_bytes=sum(np.asanyarray(array).nbytes for array in arrays.values())) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=NPZ_COMPRESS_LEVEL) as archive:
            for name, array in arrays.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def output_folder_problem(inputs: list[str | os.PathLike], output: str | os.PathLike, inside_too: bool = True,
                          option: str = "-o") -> str | None:
    """Why ``output`` cannot be written beside ``inputs``, or None: it is one of the input folders, or
    (``inside_too``) inside one, where a later run would read its own outputs as inputs. Pure apart
    from resolving the paths (links and ``..`` count as what they point to)."""
    target = Path(output).resolve()
    for folder in inputs:
        source = Path(folder).resolve()
        if target == source:
            return f"{option} {output}: is the input folder {folder}; write the outputs to another folder"
        if inside_too and source in target.parents:
            return (f"{option} {output}: is inside the input folder {folder}, where a later run would read the "
                    "outputs as inputs; write them to another folder")
    return None
