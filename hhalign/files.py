"""Files the project writes and reads: atomic writes, strict JSON, append-only JSONL logs and user-given JSONL files.

Two readers on purpose: :func:`read_log` reads the project's own append-only logs, where a torn last line is a
killed write to repair; :func:`json_lines` reads a file a user hands in, where every bad line is an error that
names the file and the line.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import HHAlignError

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
# The repository root when hhalign runs from a checkout (in an installed wheel: site-packages, which has no models.md).
CHECKOUT_DIR = Path(__file__).resolve().parents[1]


def cache_dir(kind: str, option: str | None = None) -> Path:
    """Where hhalign caches ``kind`` (judge checks, benchmark conversions, ...): ``option`` when given, else
    ``$HHALIGN_CACHE/kind``, else ``~/.cache/hhalign/kind``."""
    if option:
        return Path(option).expanduser()
    root = os.environ.get("HHALIGN_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "hhalign") / kind


def dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON: NaN and infinities are refused (they are not JSON and other tools reject them)."""
    try:
        return json.dumps(obj, indent=indent, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise HHAlignError(f"refusing to write a non-finite number (NaN or infinity) into JSON: {exc}") from None


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it when the block succeeds and is removed when it fails, so a
    reader never sees a half-written file (a full disk or a kill leaves the old file, or none)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_writable(out: str | Path, option: str = "--out") -> Path:
    """Refuse, reading only, an output folder that cannot become a writable folder (a file, or under one)."""
    path = Path(out).expanduser()
    existing = next(p for p in [path, *path.parents] if p.exists())
    if not existing.is_dir() or not writable(existing):
        if existing != path:
            why = f"lies under {str(existing)!r}, which is not a writable folder"
        else:
            why = "is a read-only folder" if existing.is_dir() else "is a file"
        raise HHAlignError(f"{option} {str(out)!r} is not writable ({why}): choose another folder")
    return path


def writable(path: Path) -> bool:
    """Whether hhalign may change ``path``: the system allows it and its owner's write bit is set (root may write
    anywhere, but a file its owner marked read-only is still not ours to replace)."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    need = os.W_OK | (os.X_OK if stat.S_ISDIR(mode) else 0)
    return bool(mode & stat.S_IWUSR) and os.access(path, need, follow_symlinks=False)


def check_files_writable(folder: Path, option: str = "--out", skip: Sequence[str] = ()) -> None:
    """Refuse, reading only, a folder holding a file or folder the run may replace or append to that is read-only
    (every entry except the top-level names in ``skip``), so that a run is refused before it writes anything."""
    if not folder.is_dir():
        return
    entries = [folder]
    for entry in sorted(folder.iterdir()):
        if entry.name in skip:
            continue
        entries.append(entry)
        if entry.is_dir() and not entry.is_symlink():
            entries += sorted(entry.rglob("*"))
    for entry in entries:
        if not writable(entry):
            fix = f"make it writable (chmod u+w) or use a new {option} folder"
            if entry == folder:
                raise HHAlignError(f"{option} {str(folder)!r} is a read-only folder: {fix}")
            kind = "folder" if entry.is_dir() else "file"
            raise HHAlignError(f"{option} {str(folder)!r} holds {str(entry.relative_to(folder))!r}, a read-only "
                               f"{kind} the run would replace: {fix}")


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        _disk_write(tmp, text.encode("utf-8"), path)
    return Path(path)


def write_error(exc: OSError, target: str | Path, kept: str) -> HHAlignError:
    """One line for a failed write of ``target``: a full disk said as such, else the system's reason; ``kept`` says
    what survives."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return HHAlignError(f"the disk is full writing {str(target)!r}: free space and run the same command again; "
                            f"{kept}")
    return HHAlignError(f"cannot write {str(target)!r} ({exc.strerror}): choose another folder or fix its "
                        f"permissions; {kept}")


def _disk_write(tmp: Path, data: bytes, target: str | Path) -> None:
    try:
        tmp.write_bytes(data)
    except OSError as exc:
        raise write_error(exc, target, "the previous file, if any, is unchanged") from None


def write_json(path: str | Path, obj: Any) -> Path:
    """Write strict, indented JSON atomically."""
    return write_text(path, dumps(obj, indent=2) + "\n")


def write_jsonl(path: str | Path, records: Iterable[Mapping]) -> Path:
    """Write one strict JSON object per line, atomically."""
    return write_text(path, "".join(dumps(r) + "\n" for r in records))


def read_json(path: str | Path, what: str, fix: str) -> Any:
    """A JSON file, or a one-line error naming ``what`` it is and ``fix``."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HHAlignError(f"{what} {str(path)!r} does not exist: {fix}") from None
    except OSError as exc:
        raise HHAlignError(f"{what} {str(path)!r} cannot be read ({exc.strerror}): {fix}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f"line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "bad UTF-8"
        raise HHAlignError(f"{what} {str(path)!r} is not valid JSON ({where}): {fix}") from None


def repair_torn_tail(path: str | Path) -> bool:
    """Drop a partial last line left by a killed writer, so appends start on a fresh line; True if one was cut."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return False
        data = path.read_bytes()
    with open(path, "r+b") as fh:
        fh.truncate(data.rfind(b"\n") + 1)
    return True


def read_log(path: str | Path, check: Callable[[dict], str | None] | None = None) -> list[dict]:
    """Every complete record of one of the project's append-only JSONL logs.

    A torn last line (a killed write) is not a record; any other bad line means the log was edited or corrupted, which
    is reported with its line number. ``check`` says why a record cannot be used (None when it can): such a record is
    an error naming the file and line too.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    # A last line without its newline was cut off mid-write, even if it happens to parse: the writer drops it before
    # appending (repair_torn_tail), so counting it here would lose that record.
    lines = path.read_bytes().split(b"\n")[:-1]
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise HHAlignError(f"{path}:{lineno} is not valid JSON: the log was edited or damaged; fix or delete "
                               "that line (the run then redoes that record)") from None
        if not isinstance(obj, dict):
            raise HHAlignError(f"{path}:{lineno} is not a JSON object: fix or delete that line")
        problem = check(obj) if check else None
        if problem:
            raise HHAlignError(f"{path}:{lineno} {problem}: the log was edited or damaged; fix or delete that line "
                               "(the run then redoes that record)")
        records.append(obj)
    return records


def json_lines(path: str | Path, shape: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSONL file a user gave; ``shape`` names a line's content.

    Strict: any line that is not a JSON object, the last one included, is an error naming the file and line.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise HHAlignError(f"{str(path)!r} does not exist: check the path") from None
    except UnicodeDecodeError:
        raise HHAlignError(f"{str(path)!r} is not UTF-8 text: write one {shape} per line as JSON") from None
    except OSError as exc:
        raise HHAlignError(f"{str(path)!r} cannot be read ({exc.strerror})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise HHAlignError(f"{path}:{lineno}: not valid JSON; write one {shape} per line") from None
        if not isinstance(obj, dict):
            raise HHAlignError(f"{path}:{lineno}: expected a JSON object, one {shape} per line")
        yield lineno, obj


class JsonlWriter:
    """Appends records to a log and flushes each batch to disk, so a kill loses at most the line being written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        repair_torn_tail(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write_many(self, records: Iterable[Mapping]) -> None:
        text = "".join(dumps(r) + "\n" for r in records)
        try:
            self._fh.write(text)
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:
            raise write_error(exc, self.path, "records written so far are kept") from None

    def write(self, record: Mapping) -> None:
        self.write_many([record])

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
