"""Atomic file writes, jsonl readers/appenders and image loading with clear errors."""
from __future__ import annotations

import codecs
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


#: what the readers decode with: UTF-8, a leading byte-order mark (Windows editors write one) skipped
READ_ENCODING = "utf-8-sig"


def not_utf8_error(path: str | os.PathLike, err: UnicodeDecodeError | None = None) -> LetheError:
    """The error for a text input that is not UTF-8: ``file:line`` and the byte offset of the first bad byte.

    Only called once decoding has failed: the file is scanned again line by line (as bytes) to find the place,
    since a text reader decodes ahead in blocks and cannot say which line it was on.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            offset = 0
            for lineno, raw in enumerate(f, 1):
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return LetheError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at byte offset "
                                      f"{offset + e.start}); save the file as UTF-8")
                offset += len(raw)
    except OSError:
        pass
    reason = f" ({err.reason})" if err is not None else ""
    return LetheError(f"{path}: not UTF-8 text{reason}; save the file as UTF-8")


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content; a missing file or a non-UTF-8 byte raises naming the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: file not found")
    try:
        return path.read_text(encoding=READ_ENCODING)
    except UnicodeDecodeError as e:
        raise not_utf8_error(path, e) from None


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's value; missing, non-UTF-8 or malformed files raise naming ``file:line``."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LetheError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


def iter_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield the objects of a jsonl file; a malformed line raises naming ``file:line``."""
    for _, obj in iter_jsonl_numbered(path):
        yield obj


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file, streamed; a non-UTF-8 byte raises naming its line."""
    with open(path, encoding=READ_ENCODING) as f:
        try:
            yield from enumerate(f, 1)
        except UnicodeDecodeError as e:
            raise not_utf8_error(path, e) from None


def iter_jsonl_numbered(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line; a malformed or non-object line raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise LetheError(f"{path}: file not found")
    for lineno, line in _text_lines(path):
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

    An unfinished last line (no trailing newline, the writer was killed, maybe inside a multi-byte character) is
    ignored: resuming cuts it first.
    """
    path = Path(path)
    if not path.is_file():
        return set()
    done: set[str] = set()
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    lines = data.splitlines(keepends=True)  # \n, \r\n and \r, as a text-mode file splits them
    for lineno, raw in enumerate(lines, 1):
        unfinished = lineno == len(lines) and not raw.endswith((b"\n", b"\r"))
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if unfinished:
                break
            raise not_utf8_error(path, e) from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if unfinished:
                break
            raise LetheError(f"{path}:{lineno}: malformed JSON line") from None
        if not isinstance(obj, dict):
            raise LetheError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
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
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise LetheError(f"{path}: cannot decode image ({e.__class__.__name__})") from None
