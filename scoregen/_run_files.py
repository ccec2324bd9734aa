"""A training run's files: where they go, a lock against a second run on them, and the rule
that files of another run stay until this run's first checkpoint (metrics lines go to
``METRICS.partial`` until then)."""

from __future__ import annotations

import glob
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["OutputLockedError", "RunFiles", "locked", "run_paths"]

# A lock file nobody holds and younger than this may belong to a run still starting up.
LOCK_STARTUP_S = 5.0


class OutputLockedError(RuntimeError):
    """Another live training run is writing the same checkpoint (its lock file names it)."""


def run_paths(config) -> tuple[Path | None, Path | None]:
    out = Path(config.out_dir) if config.out_dir else None
    checkpoint = Path(config.checkpoint) if config.checkpoint else None
    if checkpoint is None and out is not None:
        checkpoint = out / "checkpoint.safetensors"
    metrics = Path(config.metrics_file) if config.metrics_file else None
    if metrics is None and out is not None:
        metrics = out / "metrics.jsonl"
    return checkpoint, metrics


@dataclass
class RunFiles:
    """Where a run writes, and whether the files there are already its own.

    Files of another run are replaced only at this run's first checkpoint; until then the
    metrics lines go to ``METRICS.partial``. Every checkpoint writes the resume state, the
    checkpoint and the whole metrics history, each atomically.
    """

    checkpoint: Path | None
    metrics: Path | None
    in_place: bool = False  # resuming the run whose files these are
    owned: bool = False  # the checkpoint may be written at any step (its own, or none there)
    created: list[Path] = field(default_factory=list)
    live: Path | None = None  # where metrics lines are appended now

    def __post_init__(self):
        from scoregen.checkpoint import resume_path

        for target in self.targets():
            if target.is_dir():
                raise ValueError(f"{str(target)!r} is a folder; the run writes a file there")
        there = self.checkpoint is not None and (
            self.checkpoint.exists() or resume_path(self.checkpoint).exists()
        )
        self.owned = self.in_place or not there

    @property
    def lock(self) -> Path | None:
        target = self.checkpoint or self.metrics
        return None if target is None else target.with_name(target.name + ".lock")

    @property
    def partial(self) -> Path | None:
        return (
            None if self.metrics is None else self.metrics.with_name(self.metrics.name + ".partial")
        )

    def targets(self) -> list[Path]:
        from scoregen.checkpoint import resume_path

        paths = [self.metrics] if self.metrics else []
        if self.checkpoint is not None:
            paths += [self.checkpoint, resume_path(self.checkpoint)]
        return paths

    def start(self, history: list[dict[str, Any]]) -> None:
        """Clear what a killed run left (temporary files, a partial metrics file) and choose
        where the metrics lines go: the file itself when it is this run's or new."""
        for target in self.targets():
            for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
                stale.unlink(missing_ok=True)
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)
        if self.metrics is None:
            return
        if self.in_place:
            _write_jsonl(self.metrics, history)  # the resumed step's lines, no later ones
            self.live = self.metrics
        elif not self.metrics.exists():
            self.live = self.metrics
            self.created.append(self.metrics)
        else:
            self.live = self.partial
            self.created.append(self.partial)

    def append(self, entry: dict[str, Any]) -> None:
        """One metrics line, written by a single ``write`` (a kill leaves no half line)."""
        if self.live is None:
            return
        fd = os.open(self.live, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, (json.dumps(entry) + "\n").encode())
        finally:
            os.close(fd)

    def saved(self, history: list[dict[str, Any]]) -> None:
        """After a checkpoint: the metrics file holds exactly the checkpoint's history."""
        self.owned = True
        if self.metrics is not None:
            _write_jsonl(self.metrics, history)
            if self.live == self.partial:
                self.partial.unlink(missing_ok=True)
            self.live = self.metrics
        self.created.clear()

    def abandon(self) -> None:
        """A run that fails before its first checkpoint leaves nothing of its own."""
        if self.partial is not None:
            self.partial.unlink(missing_ok=True)
        if not self.owned:
            for path in self.created:
                path.unlink(missing_ok=True)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    from scoregen._io import atomic_write

    atomic_write(path, lambda f: f.writelines(json.dumps(row) + "\n" for row in rows), mode="w")


@contextmanager
def locked(path: Path | None, parallel) -> Iterator[None]:
    """Hold ``path`` (a lock file holding this PID) for the run; rank 0 takes it and every
    rank raises :class:`OutputLockedError` when another live run holds it."""
    handle, error, made = None, None, []
    if path is not None and parallel.rank == 0:
        try:
            for folder in reversed([path.parent, *path.parent.parents]):
                if not folder.exists():
                    folder.mkdir()
                    made.append(folder)
            handle = _acquire_lock(path)
        except OutputLockedError as e:
            error = ("locked", str(e))
        except OSError as e:
            error = ("os", f"cannot write in {str(path.parent)!r}: {e.strerror or e}")
    error = parallel.broadcast(error)
    try:
        if error is not None:
            raise (OutputLockedError if error[0] == "locked" else OSError)(error[1])
        yield
    finally:
        if handle is not None:
            _release_lock(path, handle)
        for folder in reversed(made):  # folders made for a run that wrote nothing
            try:
                folder.rmdir()
            except OSError:
                break


def _acquire_lock(path: Path) -> int:
    """Create ``path`` exclusively (``O_EXCL``) with this PID and hold an advisory lock on it
    (``flock``, released by the kernel when the process dies). A lock file nobody holds whose
    process is gone, or that is older than :data:`LOCK_STARTUP_S`, is stale and taken over.
    Returns the open descriptor."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): the PID alone says whether the owner lives
        fcntl = None
    for _ in range(50):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        except FileExistsError:
            pass
        except OSError as e:
            raise OSError(
                e.errno, f"cannot create the lock file {str(path)!r}: {e.strerror}"
            ) from None
        else:
            os.write(fd, f"{os.getpid()}\n".encode())
            # a newcomer may hold the flock for a moment while it reads this PID
            for _ in range(200):
                if fcntl is None or _try_flock(fcntl, fd):
                    return fd
                time.sleep(0.005)
            os.close(fd)
            continue
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue  # released meanwhile
        try:
            held = fcntl is not None and not _try_flock(fcntl, fd)
            pid = _read_pid(fd)
            age = time.time() - os.fstat(fd).st_mtime
            if held or (pid is not None and pid != os.getpid() and _alive(pid) and (
                fcntl is None or age < LOCK_STARTUP_S
            )) or (pid is None and age < LOCK_STARTUP_S):  # fmt: skip
                owner = f"process {pid}" if pid is not None else "a process starting up"
                raise OutputLockedError(
                    f"{str(path.with_suffix(''))!r} is being written by another training run "
                    f"({owner} holds {str(path)!r}); wait for it to finish, or write elsewhere"
                )
            # stale: its owner is gone; take it over if it is still the file at ``path``
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        except BaseException:
            os.close(fd)
            raise
    raise OutputLockedError(f"could not take the lock {str(path)!r}: it keeps changing hands")


def _try_flock(fcntl, fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _release_lock(path: Path, fd: int) -> None:
    # unlink before closing: a newcomer that opened the old file sees it is no longer `path`
    try:
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)
