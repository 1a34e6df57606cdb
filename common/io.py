"""Atomic file writes, jsonl readers/appenders and image loading with clear errors."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from common.errors import LetheError

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` (os.replace).

    A crash leaves the old file (or none) in place, never a half-written one. The file ends with ordinary
    permissions (0666 minus the umask, as ``open()`` gives), whatever mode the writer left on the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes 0600, and some writers (safetensors' save_file) replace the file with their own 0600 one:
        # give the result the permissions open() would, after the writer is done
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LetheError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the objects of a jsonl file; a malformed line raises naming ``file:line``."""
    for _, obj in iter_jsonl_numbered(path):
        yield obj


def iter_jsonl_numbered(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; a malformed or non-object line raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: file not found")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise LetheError(f"{path}:{lineno}: malformed JSON line") from None
            if not isinstance(obj, dict):
                raise LetheError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    return list(iter_jsonl(path))


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Append rows and fsync, so a resumed job sees every finished row and no partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def repair_jsonl_tail(path: str | os.PathLike) -> bool:
    """Drop an unfinished last line (no newline: the writer was killed mid-line). Returns True if it cut."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return False
        f.truncate(data.rfind(b"\n") + 1)
    return True


def load_done_ids(path: str | os.PathLike, key: str) -> set[str]:
    """Ids (as strings) already in a resumable jsonl output; a missing file means none.

    An unfinished last line (no trailing newline, the writer was killed) is ignored: resuming cuts it first.
    """
    path = Path(path)
    if not path.is_file():
        return set()
    done: set[str] = set()
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines) and not line.endswith("\n"):
                break
            raise LetheError(f"{path}:{lineno}: malformed JSON line") from None
        if key not in obj:
            raise LetheError(f"{path}:{lineno}: no {key!r} field")
        done.add(str(obj[key]))
    return done


def load_image(path: str | os.PathLike):
    """Open an image as RGB; a missing or undecodable file raises naming the path."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: image not found")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise LetheError(f"{path}: cannot decode image ({e.__class__.__name__})") from None
