"""Checkpoints on S3 (``s3://bucket/prefix``), and the parsing of ``s3://`` URLs the S3
adapters share.

The store keeps one object per checkpoint, ``<prefix>/<group>/<topic>/<partition>/<id>.ckpt``,
the layout of the directory store. A PutObject is atomic (a reader sees the whole object or
none), so a save is one request; ``Content-MD5`` makes S3 refuse a body damaged on the way.
Reads check the checkpoint's own digest (a MAC with a state key) and that it is the
partition and id asked for. Pruning lists the partition's objects and deletes those below the
offset, and those named, in batches of :data:`MAX_DELETE`.

The store pickles as its location alone (the client is made anew from it where it is
unpickled): the runner sends it to the process that compacts checkpoint chains, which then
reaches S3 with the URL's options and that process's environment (the runner's).

Only a checkpoint that is not there (``NoSuchKey``), damaged or another partition's is a
:class:`~fraudcep.runtime.checkpoint.CheckpointError`. Any other failure (no such bucket, access
denied, the network) is an :class:`OSError`, as a disk error is for the directory store: the
runner stops (and is restarted) rather than take a store it cannot reach for one that lost
its checkpoints, which ``--missing-checkpoint reset`` would answer with empty state. Reading
needs ``s3:GetObject``, and ``s3:ListBucket`` too: without it S3 reports a missing key as
``AccessDenied``.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

import attrs
from botocore.exceptions import BotoCoreError, ClientError

from fraudcep.errors import FraudcepError
from fraudcep.runtime.checkpoint import (
    ID_PATTERN,
    MAX_PARTITION,
    Checkpoint,
    CheckpointError,
    check_name,
    id_offset,
)
from fraudcep_aws.clients import client as make_client
from fraudcep_aws.clients import location_options

__all__ = [
    "MAX_DELETE",
    "S3CheckpointStore",
    "S3Url",
    "content_md5",
    "open_s3_store",
    "parse_s3_url",
    "s3_error_code",
]

MAX_DELETE: Final = 1000
"""Keys per DeleteObjects request, an S3 limit."""

_MISSING: Final = frozenset({"NoSuchKey", "404", "NotFound"})
# Bucket names as S3 has required since 2018: 3-63 of a-z 0-9 . -, a letter or digit at
# both ends, no "..", not an IPv4 address.
_BUCKET: Final = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# Prefix segments: S3's "safe" key characters, plus "=" for hive-style names.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9!_.*'()=-]+")

E = TypeVar("E", bound=FraudcepError)
T = TypeVar("T")


def s3_error_code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (``NoSuchKey``, ``412``...), else None."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None


def content_md5(body: bytes) -> str:
    """The ``Content-MD5`` header of ``body``: S3 refuses the PutObject if it does not match."""
    return base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()


# -- s3:// URLs -------------------------------------------------------------------------------


@attrs.frozen
class S3Url:
    """A bucket, a key prefix and the URL's options (its query parameters)."""

    bucket: str
    prefix: str
    """Without leading or trailing ``/``; empty for the bucket's root."""
    options: Mapping[str, str] = attrs.Factory(dict)

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` (joined with ``/``) under the prefix."""
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def describe(self) -> str:
        """The URL without its options."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def client(self) -> Any:
        """An S3 client, at the ``endpoint_url`` and in the ``region`` the options name."""
        return make_client(
            "s3",
            endpoint_url=self.options.get("endpoint_url") or None,
            region=self.options.get("region") or None,
        )


def parse_s3_url(url: str, *, what: str, parameters: Sequence[str], error: type[E]) -> S3Url:
    """``s3://BUCKET[/PREFIX][?name=value&...]`` checked; ``error`` (naming ``what`` and the
    URL) says what is wrong. ``parameters`` are the known option names; ``endpoint_url``
    must be an http(s) URL."""
    where = f"{what} {url!r}"
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise error(f"{where}: expected s3://BUCKET/PREFIX")
    bucket = parts.netloc
    if not bucket:
        raise error(f"{where}: no bucket name (expected s3://BUCKET/PREFIX)")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _is_ip(bucket):
        raise error(
            f"{where}: {bucket!r} is not an S3 bucket name (3 to 63 of the characters "
            "a-z, 0-9, '.' and '-', starting and ending with a letter or digit)"
        )
    if parts.fragment:
        raise error(f"{where}: an S3 location has no fragment ('#...')")
    prefix = parts.path.strip("/")
    for segment in prefix.split("/") if prefix else ():
        if not _SEGMENT.fullmatch(segment) or segment in (".", ".."):
            raise error(
                f"{where}: bad prefix segment {segment!r} (use the characters A-Z a-z 0-9 "
                "! _ . * ' ( ) = -, and no empty, '.' or '..' segments)"
            )
    options = location_options(parts.query, where=where, parameters=parameters, error=error)
    return S3Url(bucket, prefix, options)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


# -- the checkpoint store ---------------------------------------------------------------------


@attrs.define
class S3CheckpointStore:
    """Checkpoints as objects ``<prefix>/<group>/<topic>/<partition>/<id>.ckpt`` (see the
    module docstring)."""

    location: S3Url
    client: Any

    def _dir(self, group: str, topic: str, partition: int) -> str:
        if type(partition) is not int or not 0 <= partition <= MAX_PARTITION:
            raise CheckpointError(f"partition {partition!r} is not a partition number")
        return self.location.key(
            check_name("group", group), check_name("topic", topic), str(partition)
        )

    def _where(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_reopen, (self.location,))

    def save(self, checkpoint: Checkpoint, *, state_key: str | bytes | None = None) -> None:
        id_offset(checkpoint.checkpoint_id)  # an id, never a path
        key = (
            self._dir(checkpoint.group, checkpoint.topic, checkpoint.partition)
            + f"/{checkpoint.checkpoint_id}.ckpt"
        )
        body = checkpoint.to_bytes(state_key=state_key)
        self._call(
            f"saving {self._where(key)}",
            lambda: self.client.put_object(
                Bucket=self.location.bucket,
                Key=key,
                Body=body,
                ContentMD5=content_md5(body),
                ContentType="application/octet-stream",
            ),
        )

    def load(
        self,
        group: str,
        topic: str,
        partition: int,
        checkpoint_id: str,
        *,
        state_key: str | bytes | None = None,
    ) -> Checkpoint:
        id_offset(checkpoint_id)  # refuses anything that is not an id (no path tricks)
        key = self._dir(group, topic, partition) + f"/{checkpoint_id}.ckpt"
        where = self._where(key)
        try:
            answer = self.client.get_object(Bucket=self.location.bucket, Key=key)
            blob = answer["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            if s3_error_code(exc) in _MISSING:
                raise CheckpointError(f"checkpoint {where} is missing") from None
            raise OSError(f"reading {where}: {exc}") from None
        checkpoint = Checkpoint.from_bytes(blob, source=where, state_key=state_key)
        found = (checkpoint.group, checkpoint.topic, checkpoint.partition)
        if found != (group, topic, partition) or checkpoint.checkpoint_id != checkpoint_id:
            raise CheckpointError(
                f"{where} holds checkpoint {checkpoint.checkpoint_id} of "
                f"{checkpoint.topic}[{checkpoint.partition}] of group {checkpoint.group!r}, "
                f"not {checkpoint_id} of {topic}[{partition}] of {group!r}"
            )
        return checkpoint

    def prune(
        self,
        group: str,
        topic: str,
        partition: int,
        before_offset: int,
        *,
        also: Collection[str] = (),
    ) -> int:
        directory = self._dir(group, topic, partition) + "/"
        for one in also:
            id_offset(one)  # ids, never keys of other objects
        named = set(also)
        bucket = self.location.bucket
        doomed: list[str] = []

        def listing() -> None:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=directory):
                for obj in page.get("Contents", ()):
                    name = obj["Key"][len(directory) :]
                    stem = name.removesuffix(".ckpt")
                    m = ID_PATTERN.fullmatch(stem)
                    if (
                        name.endswith(".ckpt")
                        and m
                        and (int(m.group(1)) < before_offset or stem in named)
                    ):
                        doomed.append(obj["Key"])

        self._call(f"listing {self._where(directory)}", listing)
        for start in range(0, len(doomed), MAX_DELETE):
            chunk = doomed[start : start + MAX_DELETE]

            def delete(chunk: list[str] = chunk) -> dict[str, Any]:
                answer: dict[str, Any] = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in chunk], "Quiet": True}
                )
                return answer

            answer = self._call(f"deleting old checkpoints in {self._where(directory)}", delete)
            failed = answer.get("Errors") or []
            if failed:
                shown = ", ".join(f"{e.get('Key')} ({e.get('Code')})" for e in failed[:5])
                raise OSError(
                    f"deleting old checkpoints in {self._where(directory)}: {len(failed)} "
                    f"not deleted: {shown}"
                )
        return len(doomed)

    def describe(self) -> str:
        return self.location.describe()

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (ClientError, BotoCoreError) as exc:
            raise OSError(f"{what}: {exc}") from None


_PARAMETERS: Final = ("endpoint_url", "region")


def _reopen(location: S3Url) -> S3CheckpointStore:
    """The store at ``location`` with a client of its own (unpickling)."""
    try:
        s3 = location.client()
    except (BotoCoreError, ValueError) as exc:
        raise CheckpointError(f"checkpoint location {location.describe()}: {exc}") from None
    return S3CheckpointStore(location, s3)


def open_s3_store(location: str) -> S3CheckpointStore:
    """The ``s3`` checkpoint-store factory: ``s3://BUCKET[/PREFIX][?endpoint_url=URL&region=R]``.

    ``endpoint_url`` and ``region`` override the environment's (``AWS_ENDPOINT_URL``...).
    Nothing is sent to S3 until the first save or load."""
    url = parse_s3_url(
        location, what="checkpoint location", parameters=_PARAMETERS, error=CheckpointError
    )
    try:
        s3 = url.client()
    except (BotoCoreError, ValueError) as exc:
        raise CheckpointError(f"checkpoint location {location!r}: {exc}") from None
    return S3CheckpointStore(url, s3)
