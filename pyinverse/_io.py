"""Atomic file writes: every file pyinverse writes (weights, checkpoints, figures, reports) goes
through here, so a crash never leaves half a file and nothing is overwritten silently; and the
checked reading of our own safetensors model files (format tag, JSON config and training record)."""
from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable


def current_umask() -> int:
    """The process's umask, read from /proc where Linux has it: ``os.umask`` reads it only by
    setting it, and a file another thread creates in between gets mode 0666."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, overwrite: bool = False) -> Path:
    """Call ``write(temporary_path)``, then move the finished file to ``path``.

    The temporary file lives in the target folder (same file system, so the move is atomic). With
    ``overwrite=False`` an existing ``path`` raises ``FileExistsError`` (checked atomically with a
    hard link where the file system allows). A new file gets the usual permissions (0666 & ~umask),
    not mkstemp's 0600, so installed or shared files stay readable; a replaced file keeps its own.
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(temporary))
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode) if overwrite else None  # a 0600 file stays 0600
        except FileNotFoundError:
            mode = None
        os.chmod(temporary, 0o666 & ~current_umask() if mode is None else mode)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)  # fails if path appeared meanwhile: never clobber
            except FileExistsError:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
            except OSError:  # no hard links here (some network/FAT file systems)
                if path.exists():
                    raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it") from None
                os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_bytes(data), overwrite=overwrite)


def atomic_write_text(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_text(text, encoding="utf-8"), overwrite=overwrite)


def atomic_write_json(path: str | os.PathLike, value: Any, *, overwrite: bool = False) -> Path:
    """JSON with NaN/inf written as strings-free standard JSON (``allow_nan=False`` fails loudly)."""
    return atomic_write_text(path, json.dumps(value, indent=2, allow_nan=False) + "\n", overwrite=overwrite)


def read_model_file(path: str | os.PathLike, file_format: str, kind: str, where: str
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(config, training, tensors)`` of a safetensors file written with metadata ``format``
    ``file_format``, JSON ``config`` and optional JSON ``training`` record; never unpickles.

    Raises ``FileNotFoundError`` if there is no file and ``ValueError`` (naming ``where``, the
    file and ``kind``) if it is truncated, of another format, or its metadata is missing or bad.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no {kind} file at '{path}'")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except Exception as exc:  # SafetensorError (truncated header or data), OSError
        raise ValueError(f"{where}: '{path}' is not a complete safetensors file (truncated or another "
                         f"format): {type(exc).__name__}: {exc}") from None
    if metadata.get("format") != file_format:
        raise ValueError(f"{where}: '{path}' is not a pyinverse {kind} file (metadata format "
                         f"{metadata.get('format')!r}, expected {file_format!r})")
    try:
        config = json.loads(metadata["config"])
        training = json.loads(metadata.get("training", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: '{path}' has missing or malformed config metadata: {exc}") from None
    if not isinstance(config, dict) or not isinstance(training, dict):
        raise ValueError(f"{where}: '{path}' config / training metadata are not JSON objects")
    return config, training, tensors

