"""Checkpoint stores of the Kafka runner: a local directory (S3 lives in fraudcep_aws)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import attrs

from fraudcep.checkpoint import (
    FORMAT_VERSION,
    ID_PATTERN,
    MAGIC,
    MAX_PARTITION,
    Checkpoint,
    CheckpointError,
    CheckpointStore,
    check_name,
    id_offset,
    new_id,
)

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "STALE_TMP_S",
    "Checkpoint",
    "CheckpointError",
    "CheckpointStore",
    "DirectoryCheckpointStore",
    "check_name",
    "id_offset",
    "new_id",
]

STALE_TMP_S = 3600  # a temporary file this old is no save in progress


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


@attrs.define
class DirectoryCheckpointStore:
    """Checkpoints as files ``<root>/<group>/<topic>/<partition>/<id>.ckpt``.

    Each file is written to a temporary name, flushed to disk and renamed into place, so a
    crash leaves either the whole checkpoint or none.
    """

    root: Path = attrs.field(converter=Path)

    def _dir(self, group: str, topic: str, partition: int) -> Path:
        if type(partition) is not int or not 0 <= partition <= MAX_PARTITION:
            raise CheckpointError(f"partition {partition!r} is not a partition number")
        return self.root / check_name("group", group) / check_name("topic", topic) / str(partition)

    def save(self, checkpoint: Checkpoint) -> None:
        id_offset(checkpoint.checkpoint_id)  # an id, never a path
        directory = self._dir(checkpoint.group, checkpoint.topic, checkpoint.partition)
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / f"{checkpoint.checkpoint_id}.ckpt"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".ckpt")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(checkpoint.to_bytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load(self, group: str, topic: str, partition: int, checkpoint_id: str) -> Checkpoint:
        id_offset(checkpoint_id)  # refuses anything that is not an id (no path tricks)
        path = self._dir(group, topic, partition) / f"{checkpoint_id}.ckpt"
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {path} is missing") from None
        checkpoint = Checkpoint.from_bytes(blob, source=str(path))
        if (checkpoint.group, checkpoint.topic, checkpoint.partition) != (group, topic, partition):
            raise CheckpointError(
                f"{path} holds {checkpoint.topic}[{checkpoint.partition}] of group "
                f"{checkpoint.group!r}, not {topic}[{partition}] of {group!r}"
            )
        return checkpoint

    def prune(self, group: str, topic: str, partition: int, before_offset: int) -> int:
        directory = self._dir(group, topic, partition)
        removed = 0
        if not directory.is_dir():
            return 0
        for path in directory.iterdir():
            m = ID_PATTERN.fullmatch(path.stem)
            if path.suffix == ".ckpt" and m is not None and int(m.group(1)) < before_offset:
                path.unlink(missing_ok=True)
                removed += 1
            elif path.name.startswith(".tmp-") and _older_than(path, STALE_TMP_S):
                path.unlink(missing_ok=True)  # left by a crash during save
        return removed

    def describe(self) -> str:
        return f"directory {self.root}"


def open_directory_store(location: str) -> DirectoryCheckpointStore:
    """The ``file`` checkpoint-store factory: a directory path, or ``file://`` + a path."""
    if location.startswith("file://"):
        location = location[len("file://") :]
    if not location:
        raise CheckpointError("checkpoint location: empty directory path")
    return DirectoryCheckpointStore(location)
