"""``s3://bucket/key`` URIs: listing, reading and atomic writing with boto3 (``S3Storage``).

The process's one ``S3Storage`` (``imgrec.storage.backend_for``) is given the
job's ``S3Settings`` in every process (the launcher and each Beam worker, by
``imgrec.env.WorkerEnv.apply``) before it touches S3; its boto3 client is then
created lazily, once per process, and is never pickled. Credentials are never
seen here: boto3 finds them through its standard chain (environment, profile,
instance role).

Failures fall in two kinds. Transient ones (throttling, 5xx, timeouts,
connection resets) are retried with backoff by botocore, and a body that
breaks off while it is read is fetched again. Permanent ones become a
``StorageError`` whose one-line message names the bucket or key and what to
check; a missing object becomes ``FileNotFoundError`` so callers can treat it
as a per-file problem.

Writes are atomic: small objects are one PUT, larger ones a smart_open
multipart upload that is completed on success and aborted on any error, so
no partly written object ever appears under its final name. A process that is
killed cannot abort, and S3 keeps (and bills) the parts of an upload nobody
completes: so while an upload is open, its id is recorded under the job's
``S3Settings.upload_journal`` (``OUT/_work/uploads/``), and the next run into
that output aborts the recorded uploads (``abort_recorded_uploads``), and no
other upload.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import threading
import time
import uuid
from typing import Any, Callable, Iterator

from imgrec import crashpoints
from imgrec.options import S3Settings
from imgrec.storage.base import FileEntry, Storage, StorageError, UnusableFileError, too_large

LOG = logging.getLogger("imgrec.s3")

# Part size of multipart uploads: the memory a writer holds, and the size below
# which an object is sent as one PUT instead. 8 MiB is the AWS CLI's default;
# with S3's limit of 10,000 parts it allows objects up to ~78 GiB.
PART_SIZE = 8 * 1024 * 1024
# botocore tries every request this many times in all ('standard' mode retries
# throttling, 5xx, timeouts and connection errors with jittered exponential
# backoff: 1 s doubling to 20 s for throttling, 50 ms doubling otherwise). A
# throttled request is retried for up to about a minute, while an unreachable
# endpoint still fails within a few seconds.
MAX_ATTEMPTS = 8
CONNECT_TIMEOUT = 10
READ_TIMEOUT = 60
# The process's one client serves all its reading threads: a connection each, and spare.
MAX_POOL_CONNECTIONS = 64
# A response body that breaks off mid-read is not retried by botocore: we fetch
# the object again this many times.
BODY_READ_ATTEMPTS = 5


# ---------------------------------------------------------------- errors


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    if not uri.startswith("s3://"):
        raise StorageError("not an s3:// URI: %r" % uri)
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError("%r names no bucket: expected s3://bucket/prefix/" % uri)
    return bucket, key


# What to check when S3 refuses an action, by the IAM permission the action needs.
_PERMISSION = {
    "list": "s3:ListBucket",
    "read": "s3:GetObject",
    "write": "s3:PutObject",
    "delete": "s3:DeleteObject",
}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"}
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException", "301"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def storage_error(exc: BaseException, action: str, bucket: str, key: str = "", endpoint: str = "") -> Exception:
    """The exception to raise for a failed S3 call: FileNotFoundError, OSError or a one-line StorageError.

    ``endpoint``: the endpoint the client talks to ("" for AWS S3), named when it cannot be reached.
    """
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    where = "s3://%s/%s" % (bucket, key)
    endpoint = endpoint or "AWS S3"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = _one_line(error.get("Message") or code)
        if code == "NoSuchBucket":
            return StorageError(
                "bucket %r does not exist (while trying to %s %s): check the bucket name, --s3-endpoint-url "
                "and --s3-region" % (bucket, action, where)
            )
        if code in ("NoSuchKey", "NotFound") or (code == "404" and action == "read"):
            return FileNotFoundError("%s does not exist" % where)
        if code in _CREDENTIAL_CODES:
            return StorageError(
                "S3 rejected the credentials (%s) while trying to %s %s: check the AWS credentials in the "
                "environment, profile or instance role, and that they belong to %s" % (code, action, where, endpoint)
            )
        if code in _REGION_CODES:
            return StorageError(
                "bucket %r is in another region than the one used (%s): set --s3-region to the bucket's region"
                % (bucket, detail)
            )
        if code.startswith("KMS") or "kms" in detail.lower():
            return StorageError(
                "S3 could not use the KMS key while trying to %s %s (%s): check --s3-sse-kms-key-id and that the "
                "credentials may use the key (kms:GenerateDataKey, kms:Decrypt)" % (action, where, detail)
            )
        if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
            return StorageError(
                "access denied to %s (%s): check that the credentials allow %s on it, the bucket policy, and "
                "--s3-requester-pays for a requester-pays bucket" % (where, action, _PERMISSION.get(action, "s3:*"))
            )
        if code == "InvalidObjectState":
            return OSError("%s is archived (e.g. Glacier): restore it before reading" % where)
        if code == "SlowDown" or (status or 0) >= 500:
            return StorageError(
                "S3 kept failing (%s, HTTP %s) while trying to %s %s, after %d attempts: the store is overloaded "
                "or unwell; try again later" % (code or "error", status, action, where, MAX_ATTEMPTS)
            )
        return StorageError("S3 refused to %s %s: %s (%s)" % (action, where, detail, code or status))
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return StorageError(
            "cannot reach the S3 endpoint %s (while trying to %s %s): check --s3-endpoint-url "
            "(or AWS_ENDPOINT_URL_S3), --s3-region and the network" % (endpoint, action, where)
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            "no AWS credentials found (needed to %s %s): provide them through the environment "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), an AWS profile or an instance role" % (action, where)
        )
    return StorageError("S3 failed to %s %s after %d attempts: %s" % (action, where, MAX_ATTEMPTS, _one_line(exc)))


# ---------------------------------------------------------------- server-side concatenation

# S3's multipart limits: every part but the last must be at least 5 MiB, and a copied part at most 5 GiB.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_COPY_PART = 5 * 1024 * 1024 * 1024


def plan_concatenation(sizes: list[int]) -> list[list[tuple[int, int, int]]]:
    """The parts of an object made of sources of ``sizes``: each part a list of (source, start, end) ranges.

    A part of one range that is large enough is copied server-side
    (UploadPartCopy); a part of several ranges gathers sources smaller than
    S3's 5 MiB minimum part size (with the head of the next source to reach
    it) and is the only data ever read and re-sent.
    """
    parts: list[list[tuple[int, int, int]]] = []
    pending: list[tuple[int, int, int]] = []
    pending_size = 0
    last = len(sizes) - 1
    for i, size in enumerate(sizes):
        pos = 0
        if pending:
            # Top the gathered small sources up to the minimum with this source's head when
            # what is left of it can still be copied; a source too short to split is gathered whole.
            need = MIN_PART_SIZE - pending_size
            take = min(size, need) if size - need >= MIN_PART_SIZE or i == last else size
            if take:
                pending.append((i, 0, take))
                pending_size += take
                pos = take
            if pending_size >= MIN_PART_SIZE:
                parts.append(pending)
                pending, pending_size = [], 0
        rest = size - pos
        if rest <= 0:
            continue
        if rest >= MIN_PART_SIZE or (i == last and not pending):
            count = -(-rest // MAX_COPY_PART)
            step = -(-rest // count)
            for start in range(pos, size, step):
                parts.append([(i, start, min(size, start + step))])
        else:
            pending.append((i, pos, size))
            pending_size += rest
    if pending:
        parts.append(pending)
    return parts


def _folder_prefix(key: str) -> str:
    return key.rstrip("/") + "/" if key.strip("/") else ""


def _body_errors() -> tuple[type[BaseException], ...]:
    """Errors of a response body breaking off mid-read: worth fetching the object again."""
    import urllib3.exceptions
    from botocore.exceptions import ConnectionClosedError, IncompleteReadError, ReadTimeoutError, ResponseStreamingError

    return (
        ResponseStreamingError,
        IncompleteReadError,
        ConnectionClosedError,
        ReadTimeoutError,
        urllib3.exceptions.ProtocolError,
        urllib3.exceptions.ReadTimeoutError,
        ConnectionResetError,
    )


# ---------------------------------------------------------------- the backend


class S3Storage(Storage):
    """``s3://`` URIs through this process's boto3 client, made on first use with the configured settings."""

    def __init__(self, settings: S3Settings | None = None):
        self._lock = threading.Lock()
        self._settings = settings or S3Settings()
        self._client: Any = None
        self._client_pid: int | None = None

    # ---------------------------------------------------------------- settings and client

    def configure(self, settings: S3Settings | None) -> None:
        """Use ``settings`` for every S3 call of this process from now on (idempotent)."""
        settings = settings or S3Settings()
        with self._lock:
            if settings != self._settings:
                self._settings = settings
                self._client = None

    @property
    def settings(self) -> S3Settings:
        return self._settings

    def endpoint_url(self) -> str:
        return self._settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3", "")

    def client(self):
        """This process's boto3 S3 client, created on first use (clients are thread-safe, not fork-safe)."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                import boto3
                from botocore.config import Config

                config = Config(
                    retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    max_pool_connections=MAX_POOL_CONNECTIONS,
                    tcp_keepalive=True,
                )
                # A session of its own: boto3's default session is not thread-safe to create clients from.
                self._client = boto3.session.Session().client(
                    "s3",
                    endpoint_url=self.endpoint_url() or None,
                    region_name=self._settings.region or None,
                    config=config,
                )
                self._client_pid = os.getpid()
            return self._client

    def _payer(self) -> dict[str, str]:
        return {"RequestPayer": "requester"} if self._settings.requester_pays else {}

    def _encryption(self) -> dict[str, str]:
        out = {}
        if self._settings.sse:
            out["ServerSideEncryption"] = self._settings.sse
        if self._settings.sse_kms_key_id:
            out["SSEKMSKeyId"] = self._settings.sse_kms_key_id
        return out

    def _error(self, exc: BaseException, action: str, bucket: str, key: str = "") -> Exception:
        return storage_error(exc, action, bucket, key, self.endpoint_url())

    def _call(self, action: str, bucket: str, key: str, fn: Callable[..., Any], **kwargs) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, action, bucket, key) from None

    # ---------------------------------------------------------------- names

    def join(self, base: str, pieces: list[str]) -> str:
        return "/".join([base.rstrip("/"), *pieces])

    def relative_to(self, uri: str, base: str) -> str:
        prefix = base.rstrip("/") + "/"
        return uri[len(prefix):] if uri.startswith(prefix) else uri

    # ---------------------------------------------------------------- listing

    def _pages(self, bucket: str, prefix: str, **kwargs) -> Iterator[dict]:
        """Pages of a ``list_objects_v2`` listing, each request with S3's own retries."""
        from botocore.exceptions import BotoCoreError, ClientError

        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix, **self._payer(), **kwargs)
        try:
            yield from pages
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, "list", bucket, prefix) from None

    def list_top(self, uri: str) -> tuple[list[str], list[str]]:
        """Sorted 'folder' names and object names directly under the prefix (a '/'-delimited listing)."""
        bucket, key = split_uri(uri)
        prefix = _folder_prefix(key)
        dirs, files = set(), set()
        for page in self._pages(bucket, prefix, Delimiter="/"):
            for common in page.get("CommonPrefixes", ()):
                name = common["Prefix"][len(prefix):].rstrip("/")
                if name:
                    dirs.add(name)
                else:  # "photos//x.jpg": an empty path component cannot be a class name
                    LOG.warning("ignoring objects under %s: empty folder name", "s3://%s/%s" % (bucket, common["Prefix"]))
            for obj in page.get("Contents", ()):
                name = obj["Key"][len(prefix):]
                if name:  # the prefix's own "folder" marker object is not a file in it
                    files.add(name)
        if not dirs and not files:
            raise StorageError(
                "input s3://%s/%s holds no objects: check the bucket and prefix (and --s3-endpoint-url)" % (bucket, prefix)
            )
        return sorted(dirs), sorted(files)

    def walk_files(self, uri: str, input_root: str = "", skip_marked: str = "") -> Iterator[FileEntry]:
        """Every object under the prefix, with keys relative to it; one paginated listing, no delimiter.

        A key is a name, not a folder that links can lead back into, so ``input_root``
        has nothing to guard here; ``skip_marked`` is not looked for either.
        """
        bucket, key = split_uri(uri)
        prefix = _folder_prefix(key)
        for page in self._pages(bucket, prefix):
            for obj in page.get("Contents", ()):
                rel = obj["Key"][len(prefix):]
                if not rel or (rel.endswith("/") and obj.get("Size", 0) == 0):
                    continue  # a "folder" marker made by a console, not a file
                parts = rel.split("/")
                if any(p in ("", ".", "..") for p in parts):
                    yield FileEntry(
                        rel, obj.get("Size", 0), "bad_key", "object key has an empty, '.' or '..' path component"
                    )
                    continue
                # the ETag changes whenever the content does: --resume redoes a shard whose inputs changed
                yield FileEntry(rel, obj.get("Size", 0), version=obj.get("ETag", "").strip('"'))

    def list_recursive(self, uri: str) -> list[str]:
        return [e.relpath for e in self.walk_files(uri) if not e.error]

    # ---------------------------------------------------------------- reading

    def read_bytes(self, uri: str, max_bytes: int = 0) -> bytes:
        """The whole object; one over ``max_bytes`` (0 = no limit) is refused before its body is read."""
        bucket, key = split_uri(uri)
        retryable = _body_errors()
        for attempt in range(1, BODY_READ_ATTEMPTS + 1):
            response = self._call("read", bucket, key, self.client().get_object, Bucket=bucket, Key=key, **self._payer())
            size = response.get("ContentLength") or 0
            if max_bytes and size > max_bytes:
                response["Body"].close()
                raise UnusableFileError(uri, "too_large", too_large(size, max_bytes))
            try:
                return response["Body"].read()
            except retryable as exc:
                if attempt == BODY_READ_ATTEMPTS:
                    raise StorageError(
                        "reading s3://%s/%s broke off %d times (%s): check the network and the endpoint"
                        % (bucket, key, attempt, _one_line(exc))
                    ) from None
                delay = random.uniform(0, min(20.0, 0.5 * 2**attempt))
                LOG.warning("reading s3://%s/%s broke off (%s); retrying in %.1f s", bucket, key, _one_line(exc), delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def exists(self, uri: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_uri(uri)
        try:
            self.client().head_object(Bucket=bucket, Key=key, **self._payer())
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._error(exc, "read", bucket, key) from None
        except BotoCoreError as exc:
            raise self._error(exc, "read", bucket, key) from None
        return True

    def file_size(self, uri: str) -> int:
        bucket, key = split_uri(uri)
        head = self._call("read", bucket, key, self.client().head_object, Bucket=bucket, Key=key, **self._payer())
        return int(head["ContentLength"])

    @contextlib.contextmanager
    def open_read(self, uri: str) -> Iterator[io.BufferedIOBase]:
        """A seekable reader of one object (smart_open: ranged GETs, re-opened if a body breaks off)."""
        import smart_open.s3

        bucket, key = split_uri(uri)
        # Ask first, so a missing object or a refusal reads as one clear line.
        self._call("read", bucket, key, self.client().head_object, Bucket=bucket, Key=key, **self._payer())
        reader = smart_open.s3.open(
            bucket,
            key,
            "rb",
            defer_seek=True,
            client=self.client(),
            client_kwargs={"S3.Client.get_object": self._payer()},
        )
        try:
            yield reader
        finally:
            reader.close()

    def regular_file_problem(self, uri: str) -> str:
        return ""  # an object is always a plain sequence of bytes

    # ---------------------------------------------------------------- writing

    @contextlib.contextmanager
    def atomic_writer(self, uri: str) -> Iterator[io.RawIOBase]:
        """Write one object that appears complete or not at all (aborted on any exception)."""
        bucket, key = split_uri(uri)
        if not key or key.endswith("/"):
            raise StorageError("cannot write %s: it names a folder, not an object" % uri)
        writer = _ObjectWriter(self, bucket, key)
        try:
            yield writer
            writer.commit()
        except BaseException:
            writer.abort()
            raise

    def delete(self, uri: str) -> None:
        bucket, key = split_uri(uri)
        # Deleting a missing key succeeds in S3, as a missing local file is ignored by storage.delete.
        self._call("delete", bucket, key, self.client().delete_object, Bucket=bucket, Key=key, **self._payer())

    def check_output_folder(self, uri: str) -> None:
        # A prefix needs no making, and a refused write is one line when it happens (storage_error).
        return None

    # ---------------------------------------------------------------- the upload journal

    def record_upload(self, bucket: str, key: str, upload_id: str | None) -> str | None:
        """Record an open multipart upload under the upload journal; returns the record's URI (None: not recorded)."""
        journal = self._settings.upload_journal
        if not journal or not upload_id:
            return None
        record = journal.rstrip("/") + "/" + uuid.uuid4().hex + ".json"
        record_bucket, record_key = split_uri(record)
        body = json.dumps({"bucket": bucket, "key": key, "upload_id": upload_id}).encode()
        self._call("write", record_bucket, record_key, self.client().put_object, Bucket=record_bucket, Key=record_key,
                   Body=body, **self._encryption(), **self._payer())
        return record

    def forget_upload(self, record: str | None) -> None:
        """The recorded upload was completed or aborted: drop its record."""
        if record:
            self.delete(record)

    def abort_recorded_uploads(self, journal: str) -> int:
        """Abort every multipart upload recorded under ``journal`` (left by killed processes); returns how many.

        Only uploads this tool recorded are touched, by their id: never another
        writer's upload under the same prefix. An upload that was completed or
        aborted after all (its record outlived it) is simply forgotten.
        """
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_uri(journal)
        aborted = 0
        for page in self._pages(bucket, _folder_prefix(key)):
            for obj in page.get("Contents", ()):
                record = "s3://%s/%s" % (bucket, obj["Key"])
                try:
                    doc = json.loads(self.read_bytes(record))
                    target_bucket, target_key, upload_id = doc["bucket"], doc["key"], doc["upload_id"]
                except FileNotFoundError:
                    continue
                except (ValueError, KeyError, TypeError):
                    LOG.warning("ignoring %s: not an upload record", record)
                    self.delete(record)
                    continue
                try:
                    self.client().abort_multipart_upload(Bucket=target_bucket, Key=target_key, UploadId=upload_id,
                                                         **self._payer())
                    aborted += 1
                except ClientError as exc:
                    if str(exc.response.get("Error", {}).get("Code")) not in ("NoSuchUpload", "404"):
                        raise self._error(exc, "write", target_bucket, target_key) from None
                except BotoCoreError as exc:
                    raise self._error(exc, "write", target_bucket, target_key) from None
                self.delete(record)
        if aborted:
            LOG.info("aborted %d multipart upload(s) that an earlier, killed run left open under s3://%s/", aborted, bucket)
        return aborted

    # ---------------------------------------------------------------- server-side concatenation

    def concatenate(self, dest: str, sources: list[tuple[str, int]]) -> None:
        """Write ``dest`` as the concatenation of the ``(uri, size)`` sources, server-side where S3 allows.

        One multipart upload whose parts are UploadPartCopy ranges of the sources;
        only sources below the 5 MiB part minimum are read (see
        ``plan_concatenation``). The upload is aborted on any error, so ``dest``
        appears complete or not at all.
        """
        bucket, key = split_uri(dest)
        located = [split_uri(uri) for uri, _ in sources]
        parts = plan_concatenation([size for _, size in sources])
        client = self.client()
        if not parts:
            self._call("write", bucket, key, client.put_object, Bucket=bucket, Key=key, Body=b"", **self._encryption(),
                       **self._payer())
            return
        upload = self._call("write", bucket, key, client.create_multipart_upload, Bucket=bucket, Key=key,
                            **self._encryption(), **self._payer())["UploadId"]
        record = self.record_upload(bucket, key, upload)
        done = []
        try:
            for number, ranges in enumerate(parts, 1):
                if len(ranges) == 1 and (ranges[0][2] - ranges[0][1] >= MIN_PART_SIZE or number == len(parts)):
                    i, start, end = ranges[0]
                    src_bucket, src_key = located[i]
                    response = self._copy_part(bucket, key, upload, number, src_bucket, src_key, start, end)
                    etag = response["CopyPartResult"]["ETag"]
                else:
                    body = b"".join(self._read_range(*located[i], start, end) for i, start, end in ranges)
                    response = self._call("write", bucket, key, client.upload_part, Bucket=bucket, Key=key,
                                          UploadId=upload, PartNumber=number, Body=body, **self._payer())
                    etag = response["ETag"]
                done.append({"PartNumber": number, "ETag": etag})
            self._call("write", bucket, key, client.complete_multipart_upload, Bucket=bucket, Key=key,
                       UploadId=upload, MultipartUpload={"Parts": done}, **self._payer())
        except BaseException:
            try:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, **self._payer())
            except Exception as exc:  # noqa: BLE001 - the original error matters more; keep it propagating
                LOG.warning("could not abort the multipart upload of %s (%s); the next run aborts it", dest, _one_line(exc))
            else:
                with contextlib.suppress(StorageError, OSError):  # the original error matters more
                    self.forget_upload(record)
            raise
        self.forget_upload(record)

    def _copy_part(self, bucket, key, upload, number, src_bucket, src_key, start, end) -> dict:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.client().upload_part_copy(
                Bucket=bucket, Key=key, UploadId=upload, PartNumber=number,
                CopySource={"Bucket": src_bucket, "Key": src_key}, CopySourceRange="bytes=%d-%d" % (start, end - 1),
                **self._payer(),
            )
        except (ClientError, BotoCoreError) as exc:
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):  # the source shard, not the destination
                raise self._error(exc, "read", src_bucket, src_key) from None
            raise self._error(exc, "write", bucket, key) from None

    def _read_range(self, bucket: str, key: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        response = self._call("read", bucket, key, self.client().get_object, Bucket=bucket, Key=key,
                              Range="bytes=%d-%d" % (start, end - 1), **self._payer())
        return response["Body"].read()


# ---------------------------------------------------------------- one object being written


class _ObjectWriter(io.RawIOBase):
    """Buffers the first part in memory; past ``PART_SIZE`` it streams a smart_open multipart upload."""

    def __init__(self, store: S3Storage, bucket: str, key: str):
        super().__init__()
        self._store = store
        self._bucket = bucket
        self._key = key
        self._buffer = io.BytesIO()
        self._upload = None  # smart_open.s3.MultipartWriter once the object outgrows one part
        self._record = None  # where the open upload is recorded (upload journal), if it is
        self._size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._size

    def write(self, data) -> int:
        n = len(data)
        if self._upload is None:
            self._buffer.write(data)
            if self._buffer.tell() >= PART_SIZE:
                self._start_multipart()
        else:
            self._guarded(self._upload.write, data)
        self._size += n
        return n

    def _start_multipart(self) -> None:
        import smart_open.s3

        store = self._store
        args = {"S3.Client.create_multipart_upload": {**store._encryption(), **store._payer()}}
        for method in ("upload_part", "complete_multipart_upload", "abort_multipart_upload"):
            args["S3.Client.%s" % method] = store._payer()
        # An empty object is completed by smart_open with put_object; encrypt that too.
        args["S3.Client.put_object"] = {**store._encryption(), **store._payer()}
        self._upload = self._guarded(
            smart_open.s3.MultipartWriter,
            self._bucket,
            self._key,
            part_size=PART_SIZE,
            client=store.client(),
            client_kwargs=args,
        )
        # smart_open keeps the id of the upload it created here; recorded before any part is sent
        self._record = store.record_upload(self._bucket, self._key, getattr(self._upload, "_upload_id", None))
        self._guarded(self._upload.write, self._buffer.getbuffer())
        self._buffer = io.BytesIO()
        crashpoints.reached("multipart-part-sent")

    def _guarded(self, fn, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._store._error(exc, "write", self._bucket, self._key) from None
        except ValueError as exc:  # smart_open wraps a refused create_multipart_upload
            if isinstance(exc.__cause__, (ClientError, BotoCoreError)):
                raise self._store._error(exc.__cause__, "write", self._bucket, self._key) from None
            raise
        except OSError as exc:  # smart_open gave up after its own retries
            raise StorageError(
                "writing s3://%s/%s failed: %s: check the endpoint and the network" % (self._bucket, self._key, _one_line(exc))
            ) from None

    def commit(self) -> None:
        store = self._store
        if self._upload is not None:
            self._guarded(self._upload.close)
            store.forget_upload(self._record)
        else:
            store._call(
                "write",
                self._bucket,
                self._key,
                store.client().put_object,
                Bucket=self._bucket,
                Key=self._key,
                Body=self._buffer.getvalue(),
                **store._encryption(),
                **store._payer(),
            )

    def abort(self) -> None:
        """Drop everything written; a multipart upload in flight is aborted so no object appears."""
        upload, self._upload = self._upload, None
        self._buffer = io.BytesIO()
        if upload is None:
            return
        try:
            upload.terminate()
        except Exception as exc:  # noqa: BLE001 - the original error matters more; keep it propagating
            LOG.warning(
                "could not abort the multipart upload of s3://%s/%s (%s); no object was created, and the "
                "next run into this output aborts it",
                self._bucket,
                self._key,
                _one_line(exc),
            )
            return  # still recorded: the next run aborts it
        with contextlib.suppress(StorageError, OSError):  # the original error matters more; a stale record is harmless
            self._store.forget_upload(self._record)
