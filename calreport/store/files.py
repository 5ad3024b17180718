"""Crash-safe file primitives: atomic replace, single-write appends and the sibling-file lock.

Every call goes through `os` functions (write, fsync, replace) so tests can inject I/O errors.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from calreport.errors import CalreportError
from calreport.store.paths import Root, lock_path

DEFAULT_MODE = 0o644
LOCK_TIMEOUT_S = 30.0


def locked(path: Path, timeout: float = LOCK_TIMEOUT_S) -> FileLock:
    """The lock every writer of `path` takes: a sibling `.lock` file (never deleted, so two
    processes can never hold locks on two different inodes of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_path(path)), timeout=timeout)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


MAX_INPUT_BYTES = 512 * 1024 * 1024  # a day's Deribit chain is tens of MB; nothing we read comes near
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _open_regular(path: Path | str) -> tuple[int, os.stat_result]:
    """(fd, stat) of a regular file opened for reading; OSError (FileNotFoundError) as os.open raises it.

    Opened without blocking (a FIFO would wait for a writer) and checked on the open descriptor, so
    nothing can swap the file in between; the descriptor is blocking again when returned."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CalreportError(f"not a regular file ({_kind(st.st_mode)}): refused", path)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def open_input(path: Path | str) -> BinaryIO:
    """A file of record read as a stream (the history JSONL, which grows without a size bound by
    design and is read line by line): the regular-file rule of read_input, no size limit.
    FileNotFoundError passes through (a missing history is an empty one); other OS errors too."""
    fd, _ = _open_regular(path)
    return os.fdopen(fd, "rb")


def read_input(path: Path | str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """The bytes of a file the user pointed at; a missing or unreadable one is a one-line error.

    The one home of the input rule: only regular files (a FIFO would block, /dev/zero never ends;
    a symlink counts as what it points to) and at most `limit` bytes. The file is opened without
    blocking and checked on the open descriptor, so nothing can swap it in between.
    """
    try:
        fd, st = _open_regular(path)
    except FileNotFoundError:
        raise CalreportError("file not found", path) from None
    except OSError as exc:
        raise CalreportError(f"cannot read file ({exc.strerror or exc})", path) from None
    try:
        if st.st_size > limit:
            raise CalreportError(f"file is {st.st_size:,} bytes, over the {limit:,}-byte limit", path)
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # grew while we read it
                raise CalreportError(f"file is over the {limit:,}-byte limit", path)
        return b"".join(chunks)
    except OSError as exc:
        raise CalreportError(f"cannot read file ({exc.strerror or exc})", path) from None
    finally:
        os.close(fd)


def decompress_gzip(raw: bytes, path: Path | str, limit: int = MAX_INPUT_BYTES) -> bytes:
    """A gzip file's content, at most `limit` bytes of it (a small bomb must not fill memory)."""
    import zlib

    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise CalreportError(f"not a readable gzip file ({exc})", path) from None
    if len(out) > limit:
        raise CalreportError(f"gzip content over the {limit:,}-byte limit", path)
    if not d.eof:
        raise CalreportError("not a readable gzip file (truncated)", path)
    return out


def output_path(root: Root, path: Path | str, *, mkdir: bool = False, directory: bool = False) -> Path:
    """Where a command's `--out` may write: never inside the root's files of record (config/,
    history/, data/, site/), never over a special file, and into an existing directory unless
    `mkdir` (the `--mkdir` flag) asks for it to be created. `directory`: the output is a directory."""
    target = Path(path).expanduser().resolve()  # through symlinks: a link into config/ is config/
    for d in (root.config_dir, root.history_dir, root.path / "data", root.site_dir):
        base = d.resolve()
        if target == base or target.is_relative_to(base):
            raise CalreportError(f"--out is inside the files of record ({d.name}/ of the root): choose a path outside them", path)
    if target.exists() and not (target.is_dir() if directory else target.is_file()):
        raise CalreportError("--out exists and is not a " + ("directory" if directory else "regular file"), path)
    parent = target.parent
    if not parent.is_dir():
        if parent.exists() or not mkdir:
            raise CalreportError(f"--out: the directory {str(parent)[:100]} does not exist (pass --mkdir to create it)", path)
        parent.mkdir(parents=True, exist_ok=True)
    return target


def present(path: Path) -> bool:
    """True when `path` exists, False when nothing is there; a dangling symlink is an error.

    A symlink whose target is gone is neither "absent" (which would mean "use the defaults") nor
    readable: it is refused in one line, so nothing treats it as never written or replaces it.
    """
    if os.path.lexists(path) and not os.path.exists(path):
        try:
            target = os.readlink(path)
        except OSError:
            target = "?"
        raise CalreportError(f"dangling symlink (its target {target[:100]!r} does not exist)", path)
    return os.path.exists(path)


def fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the entry."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` so a reader sees the old file or the new one, never a mix.

    Temp file in the same directory, write + fsync, keep the old file's mode, os.replace,
    fsync the directory. Any failure removes the temp file and raises CalreportError; the old
    file is left untouched. `durable=False` skips both fsyncs: for files derived from the files
    of record (a history page), which a power cut may lose and the next render rewrites.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mode = DEFAULT_MODE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            _write_all(fd, data)
            os.fchmod(fd, mode)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CalreportError(f"could not write file ({exc.strerror or exc}); the previous version is kept", path) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise CalreportError(f"wrote file but could not fsync its directory ({exc.strerror or exc})", path) from None


def append_line(path: Path, line: bytes) -> None:
    """Append one complete line with one write; start on a fresh line if the last one is torn.

    The caller holds the file's lock. A torn last line (crash mid-append) is never rewritten:
    readers skip it, and this append begins with a newline so the new row stays whole.
    """
    if not line.endswith(b"\n"):
        line += b"\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, DEFAULT_MODE)
    except OSError as exc:
        raise CalreportError(f"cannot open for append ({exc.strerror or exc})", path) from None
    size = -1
    try:
        size = os.fstat(fd).st_size
        if size:
            last = os.pread(fd, 1, size - 1)
            if last != b"\n":
                line = b"\n" + line
        _write_all(fd, line)
        os.fsync(fd)
    except OSError as exc:
        # The row did not become durable: take back what we wrote (we hold the lock, so nothing
        # else was appended after it) so a failed append never looks like a recorded one.
        if size >= 0:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
        raise CalreportError(f"could not append ({exc.strerror or exc})", path) from None
    finally:
        os.close(fd)


def backup_link(path: Path) -> Path | None:
    """Hard-link `path` to a hidden sibling so it can be put back by a rename alone.

    Restoring by rename needs no new data blocks, so it still works when the disk is full. Returns
    None when there is no file to keep; raises OSError when links are not supported.
    """
    if not path.exists():
        return None
    for _ in range(10):
        backup = path.with_name(f".{path.name}.{os.urandom(4).hex()}.bak.tmp")
        try:
            os.link(path, backup)
            return backup
        except FileExistsError:
            continue
    raise OSError(f"could not create a backup link for {path}")


def restore_backup(path: Path, backup: Path | None) -> None:
    """Put the linked backup back in place (or remove `path` if there was none). Best effort."""
    try:
        if backup is None:
            path.unlink(missing_ok=True)
        else:
            os.replace(backup, path)
        fsync_dir(path.parent)
    except OSError:
        pass
