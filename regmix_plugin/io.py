"""Atomic file writes: a reader sees the old file or the new one, never a partial one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp file lives in the target's folder so that os.replace is a same-filesystem rename.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> Path:
    # allow_nan=False: NaN is not JSON, and a file other tools cannot read is a partial file too.
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and flush it; a crash loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: JSON has no NaN (e.g. a rho over constant losses),
    and :func:`atomic_write_json` refuses one rather than write a file other tools cannot read."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def read_json_file(path: str | os.PathLike, error: type[Exception], label: str, what: str, remedy: str) -> Any:
    """The JSON in a file a tool wrote (a plan, a manifest), or ``error`` with one line: ``{label}: {what} not
    found; {remedy}`` when it is missing, ``{label}: not a readable {what} (malformed JSON at line N); {remedy}``
    when it cannot be read."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{label}: {what} not found; {remedy}") from None
    except json.JSONDecodeError as e:
        raise error(f"{label}: not a readable {what} (malformed JSON: {e.msg} at line {e.lineno}); {remedy}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise error(f"{label}: not a readable {what} ({type(e).__name__}); {remedy}") from None
