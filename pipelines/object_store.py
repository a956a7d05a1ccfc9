"""Paths on object stores (``s3://``, ``gs://``), where a "folder" is a prefix of object names.

Beam's ``FileSystems`` sees objects only: ``exists`` of a prefix is False and ``rename`` of one fails, where a run
treats its sink folders as folders (stages them, sets the previous run's aside, moves them into place). These
helpers give a folder's meaning there, and leave local paths to the file system. ``store_error`` turns an object
store's failure (a bucket that does not exist, an endpoint that cannot be reached, credentials refused), which
Beam raises as its clients' own exceptions, into the sentence a person is shown.

Tested on S3 against moto's S3 server on 127.0.0.1 (``tests/e2e/test_object_store.py``), and on Google Cloud Storage
against gcp-storage-emulator on 127.0.0.1 (``tests/e2e/test_gcs.py``)."""
from __future__ import annotations

import contextlib
import logging
import os

from apache_beam.io.filesystems import FileSystems


def is_remote(path: str) -> bool:
    """A URL (``s3://``, ``gs://``, ``hdfs://``), not a local path."""
    return "://" in path


def _matching(pattern: str) -> list:
    """Beam's ``FileMetadata`` (path, size, time) of the objects of an object store that match the glob
    ``pattern``. An error of the store itself is raised (a bucket out of reach is not a folder that holds nothing);
    a file system's error for "no match" is none."""
    try:
        return [m for r in FileSystems.match([pattern]) for m in r.metadata_list]
    except Exception as exc:  # noqa: BLE001 - a store's "no match" is an error on some file systems
        if store_error(exc) is not None:
            raise
        return []


def _objects_matching(pattern: str) -> list[str]:
    """The paths of the objects that match ``pattern`` (``_matching``)."""
    return [m.path for m in _matching(pattern)]


def objects_under(prefix: str) -> list[str]:
    """The objects under ``prefix`` (a "folder" of an object store)."""
    return _objects_matching(prefix.rstrip("/") + "/**")


def objects_listed_under(prefix: str) -> dict:
    """The objects under ``prefix`` by their names below it, each with Beam's ``FileMetadata`` (size, time)."""
    base = prefix.rstrip("/") + "/"
    return {m.path[len(base):]: m for m in _matching(base + "**") if m.path.startswith(base)}


def folders_matching(output: str, pattern: str) -> list[str]:
    """The names of the "folders" of an object store's ``output`` that match ``pattern`` (and so hold objects)."""
    base = output.rstrip("/") + "/"
    return sorted({path[len(base):].split("/", 1)[0] for path in _objects_matching(f"{base}{pattern}/**")})


def path_exists(path: str) -> bool:
    """Whether ``path`` names a file or folder; on an object store, an object or a prefix that holds objects."""
    if not is_remote(path):
        return os.path.lexists(path)
    return FileSystems.exists(path) or bool(objects_under(path))


def read_json_or_none(path: str):
    """The JSON held by the local file or store's object ``path``, or None where there is none or it is not JSON.
    An error of the store itself is raised (a missing note is not a bucket out of reach)."""
    import json

    try:
        if is_remote(path) and not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            return json.loads(f.read().decode())
    except (OSError, ValueError):
        return None


def is_file(path: str) -> bool:
    """Whether ``path`` is a local file, or an object of an object store (not a prefix)."""
    return FileSystems.exists(path) if is_remote(path) else os.path.isfile(path)


def open_as_stored(path: str):
    """The local file or store's object ``path`` open for reading its bytes as stored (a compressed file is not
    decompressed)."""
    from apache_beam.io.filesystem import CompressionTypes

    return FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    """The bytes of the local file or store's object ``path`` (a suite or mapping file: read once, by the launcher);
    ``FileNotFoundError`` where there is none. An error of the store itself is raised."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    if not is_file(path):
        raise FileNotFoundError(path)
    with open_as_stored(path) as f:
        return f.read()


def move_path(source: str, target: str) -> None:
    """Move the file or folder ``source`` to ``target``. On an object store a folder is each object under its
    prefix, moved together (a copy and a delete each): Beam renames objects only, and a folder's rename had failed
    there with "Not Found"."""
    if not is_remote(source) or FileSystems.exists(source):
        FileSystems.rename([source], [target])
        return
    objects = objects_under(source)
    if not objects:
        raise FileNotFoundError(f"{source} holds nothing to move")
    base = source.rstrip("/") + "/"
    FileSystems.rename(objects, [target.rstrip("/") + "/" + name[len(base):] for name in objects])


# Beam's clients' own exceptions, by name: their modules import only where the store's extra is installed
_STORE_ERRORS = {"S3ClientError", "GcsIOError", "HttpError", "Forbidden", "NotFound", "ClientError",
                 "NoCredentialsError", "EndpointConnectionError", "Unauthorized", "InvalidResponse"}


def _unwrapped(exc: BaseException) -> tuple[str, BaseException]:
    """The first path and its own exception inside Beam's ``BeamIOError`` (which maps each path to its own
    exception), or ``("", exc)``."""
    path = ""
    seen = 0
    while seen < 8:  # Beam nests a BeamIOError per call (match, then exists): follow the first path of each
        seen += 1
        details = getattr(exc, "exception_details", None)
        if not isinstance(details, dict) or not details:
            break
        key, inner = next(iter(details.items()))
        path = key[0] if isinstance(key, tuple) else str(key)
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return path, exc


def store_error(exc: BaseException) -> tuple[str, str] | None:
    """``(path, reason)`` when ``exc`` is an object store's failure, found inside Beam's ``BeamIOError`` where it is
    wrapped; None for any other exception."""
    path, exc = _unwrapped(exc)
    if not any(kind.__name__ in _STORE_ERRORS for kind in type(exc).__mro__):  # boto3's NoSuchBucket: a ClientError
        return None
    response = getattr(exc, "response", None)  # GCS's upload of an object answered with an error: its status
    if type(exc).__name__ == "InvalidResponse" and hasattr(response, "status_code"):
        reason = f"the store answered {response.status_code} {getattr(response, 'reason', '') or ''}".strip()
    else:
        reason = getattr(exc, "message", None) or str(exc)
    return path, " ".join(str(reason).split())


def _not_found(exc: BaseException) -> bool:
    """Whether a GCS failure is a 404: an object's, or its bucket's (the storage client's ``NotFound``, or an
    upload's ``InvalidResponse`` with that status)."""
    response = getattr(exc, "response", None)
    return type(exc).__name__ == "NotFound" or getattr(response, "status_code", None) == 404


class _BeamStoreRecords(logging.Filter):
    """Drops the records Beam's S3 and GCS clients log with ``logging.error`` (to the root logger, a traceback
    each) for a failure they also raise."""

    def filter(self, record: logging.LogRecord) -> bool:
        where = record.pathname.replace("\\", "/")
        return "/apache_beam/io/aws/" not in where and "/apache_beam/io/gcp/gcsio" not in where


@contextlib.contextmanager
def quiet_store_logs():
    """Within: Beam's object-store clients log no error of their own, for calls whose failure seqwatch says in one
    sentence (a probe into a bucket that does not exist had printed a traceback of 20 lines before it)."""
    quiet = _BeamStoreRecords()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def store_sentence(exc: BaseException, path: str = "") -> str:
    """One sentence for an object store's failure (``store_error(exc)`` is not None): the path, the store's reason
    and where to look."""
    found, reason = store_error(exc) or ("", str(exc))
    path = found or path
    if path.startswith("gs://") and _not_found(_unwrapped(exc)[1]):  # S3 names NoSuchBucket in its own reason
        bucket = missing_bucket(path)  # a bucket's name mistyped: said as such, not as an object not found
        if bucket:
            return f"{path}: there is no bucket {bucket!r} at that store"
    return f"{path + ': ' if path else ''}{reason}; {store_hint(path)}"


def store_hint(path: str) -> str:
    """Where to look when ``path``'s store refused or could not be reached."""
    if path.startswith("s3://"):
        return ("S3 is reached with Beam's --s3_endpoint_url, --s3_region_name, --s3_access_key_id and "
                "--s3_secret_access_key flags, or else the AWS_* variables of the environment")
    if path.startswith("gs://"):
        return ("Google Cloud Storage is reached with Application Default Credentials (gcloud auth application-default "
                "login, or a service account where the job runs), or an emulator at STORAGE_EMULATOR_HOST")
    return "check the path and the credentials of its file system"


_S3_CLIENTS_AS_MADE: dict = {}  # (process, S3 options) -> a Beam S3 client's attributes as made (its boto3 client)


def _s3_options_key(options) -> tuple:
    """What a Beam S3 client is made from (``PipelineOptions`` or a dict of them), and this process."""
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    names = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token", "s3_endpoint_url", "s3_disable_ssl",
             "s3_region_name", "s3_api_version", "s3_verify")
    if isinstance(options, PipelineOptions):
        s3 = options.view_as(S3Options)
        return (os.getpid(), *(getattr(s3, name, None) for name in names))
    return (os.getpid(), *(options.get(name) for name in names))


def share_s3_clients() -> None:
    """Let Beam's S3 clients of one process and the same options share one boto3 client. Beam (2.77) makes a boto3
    session and client for every call of its S3 file system (each exists, match, open, create, rename): 70-115 ms of
    CPU each, most of it botocore parsing its S3 service model again for the new session, and a run of 2,400
    readings into S3 made 79 of them in its launcher alone (9.2 s). boto3's clients are thread-safe; each of Beam's
    keeps its own download state, which starts as made. Called when this module is imported (by the launcher and
    by every worker process that writes a sink)."""
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:  # Beam without its [aws] extra: no S3 file system
        return
    made = boto3_client.Client.__init__
    if boto3_client.boto3 is None or getattr(made, "shares_boto3_clients", False):
        return

    def __init__(self, options):
        key = _s3_options_key(options)
        as_made = _S3_CLIENTS_AS_MADE.get(key)
        if as_made is None:
            made(self, options)
            _S3_CLIENTS_AS_MADE[key] = dict(vars(self))  # no download begun yet
        else:
            self.__dict__.update(as_made)

    __init__.shares_boto3_clients = True
    boto3_client.Client.__init__ = __init__


share_s3_clients()


def s3_client(options=None, config=None):
    """A boto3 S3 client with the ``--s3_*`` flags of ``options`` (a ``PipelineOptions``; by default those Beam's
    file systems were given, ``FileSystems.set_options``), for the calls Beam's S3 file system does not make (a
    bucket's HeadBucket, a conditional write): the AWS environment fills in what the flags leave out."""
    import boto3
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    if options is None:  # Beam keeps them on the class (2.77: FileSystems._pipeline_options)
        options = getattr(FileSystems, "_pipeline_options", None) or PipelineOptions([])
    s3 = options.view_as(S3Options)
    return boto3.session.Session().client(
        "s3", region_name=s3.s3_region_name, endpoint_url=s3.s3_endpoint_url, use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify, aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key,
        aws_session_token=s3.s3_session_token, config=config)


def bucket_and_key(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` (or ``gs://...``) as ``("bucket", "some/key")``."""
    bucket, _, key = url.split("://", 1)[1].partition("/")
    return bucket, key


def gcs_client(options=None):
    """Google's storage client as Beam's GCS file system makes it (the same credentials: Application Default
    Credentials, else anonymous; ``STORAGE_EMULATOR_HOST`` reaches an emulator), for the calls Beam does not make (a
    bucket's lookup, a conditional write)."""
    from apache_beam.io.gcp.gcsio import create_storage_client
    from apache_beam.options.pipeline_options import PipelineOptions

    if options is None:  # Beam keeps them on the class (2.77: FileSystems._pipeline_options)
        options = getattr(FileSystems, "_pipeline_options", None) or PipelineOptions([])
    return create_storage_client(options)


_GCS_PROBE_TIMEOUT = (5, 15)  # seconds to connect and to read, for a request that cannot wait out Beam's retries


def missing_bucket(path: str) -> str | None:
    """The bucket of the ``s3://`` or ``gs://`` path ``path`` where the store says that it does not exist (a 404 for
    the bucket itself, which S3 and GCS answer whatever the caller's rights); None otherwise, and where it cannot be
    asked."""
    if path.startswith("gs://"):
        return _missing_gcs_bucket(bucket_and_key(path)[0])
    if not path.startswith("s3://"):
        return None
    bucket, _ = bucket_and_key(path)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        return None
    try:
        s3_client().head_bucket(Bucket=bucket)
    except ClientError as exc:
        return bucket if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket") else None
    except BotoCoreError:
        return None
    return None


def _missing_gcs_bucket(bucket: str) -> str | None:
    try:
        from google.api_core.exceptions import NotFound
    except ImportError:
        return None
    try:
        gcs_client().get_bucket(bucket, timeout=_GCS_PROBE_TIMEOUT, retry=None)
    except NotFound:
        return bucket
    except Exception:  # noqa: BLE001 - refused rights, no connection: not known to be missing
        return None
    return None


def unreachable_bucket(paths, beam_args: list[str]) -> str | None:
    """A sentence when an S3 or GCS bucket among ``paths`` cannot be reached at all (an endpoint that does not
    answer, no credentials), asked once per bucket with a short timeout before anything else: Beam retries such a
    request for minutes before it gives up (S3: 585 s measured with an endpoint whose server had stopped; GCS: more
    than 300 s). None where each bucket answers, whatever it answers: a missing bucket or refused rights are said by
    the run's own first request to it (a key may read its objects without the right to ask for the bucket)."""
    s3 = sorted({bucket_and_key(path)[0] for path in paths if path.startswith("s3://")})
    gcs = sorted({bucket_and_key(path)[0] for path in paths if path.startswith("gs://")})
    return (_unreachable_s3_bucket(s3, beam_args) if s3 else None) or (
        _unreachable_gcs_bucket(gcs, beam_args) if gcs else None)


def _unreachable_s3_bucket(buckets: list[str], beam_args: list[str]) -> str | None:
    try:
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # no boto3: Beam's S3 file system says so itself
        return None
    from apache_beam.options.pipeline_options import PipelineOptions

    client = s3_client(PipelineOptions(beam_args),
                       Config(connect_timeout=5, read_timeout=15, retries={"max_attempts": 2, "mode": "standard"}))
    for bucket in buckets:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError:  # the store answered
            continue
        except BotoCoreError as exc:  # no connection, a timeout, no credentials
            return f"s3://{bucket}: {' '.join(str(exc).split())}; {store_hint('s3://')}"
    return None


def _unreachable_gcs_bucket(buckets: list[str], beam_args: list[str]) -> str | None:
    try:
        from google.api_core.exceptions import GoogleAPICallError
        from google.auth.exceptions import GoogleAuthError
        from requests.exceptions import RequestException
    except ImportError:  # no google-cloud-storage: Beam's GCS file system says so itself
        return None
    from apache_beam.options.pipeline_options import PipelineOptions

    client = gcs_client(PipelineOptions(beam_args))
    for bucket in buckets:
        try:
            client.get_bucket(bucket, timeout=_GCS_PROBE_TIMEOUT, retry=None)
        except GoogleAPICallError:  # the store answered
            continue
        except RequestException as exc:  # no connection, a timeout
            return f"gs://{bucket}: {_no_answer(exc, client)}; {store_hint('gs://')}"
        except GoogleAuthError as exc:  # credentials refused
            return f"gs://{bucket}: {' '.join(str(exc).split())}; {store_hint('gs://')}"
    return None


def _no_answer(exc: BaseException, client) -> str:
    """``"no answer from http://127.0.0.1:4999 (Connection refused)"``: requests' own text is a line of 300
    characters of urllib3's retry state."""
    import re

    cause = re.search(r"\[Errno -?\d+\] ([^\"')]+)", str(exc))
    if cause is None:
        cause = re.search(r"(timed out|Read timed out)", str(exc))
    endpoint = getattr(getattr(client, "_connection", None), "API_BASE_URL", "the store")
    return f"no answer from {endpoint}" + (f" ({cause.group(1).strip()})" if cause else "")
