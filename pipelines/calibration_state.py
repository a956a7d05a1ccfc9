"""A batch run's per-entity online calibration, kept for the next run (``--calibration-from``).

A scheduled job scores each day's files in a run of their own. Without a kept state every run started each
entity's online calibration from the model's calibration scores, so each day's first windows were judged as a new
entity's: two daily runs raised 29 alerts where one run over both days raised 17 (the bug hunt of online
calibration, 2026-12-03).

A batch run with online calibration writes ``calibration_state.parquet`` beside its sinks: one row per entity
with the model version its calibration belongs to, the end of the last window that joined its history, the
calibration itself (``OnlineTailCalibration.to_dict`` as JSON, but for its arrays), the history's scores and the
sorted scores of its fit in use and of its seed (lists of doubles: at the full history of 8,640 windows the JSON
text of the history had been 220 kB an entity, parsed by every worker, and that of the fits' 80 kB, most of the
time a state took to write). A state written before these had columns of their own (they are in its JSON) is
read as well. A later run given ``--calibration-from`` (that run's output folder, or the file) starts from it:

- an entity's calibration goes on from its state where the model version is the same; under another version it
  starts again from that version's calibration scores, as a version switch in a stream does;
- a window that ends no later than the last window of the state (inputs that repeat the previous day's last
  minutes for window context) is judged by it but does not join its history a second time;
- an entity of the state that the run does not see is written again as it was, so a machine that was off for a
  day keeps its history; with ``--calibration-keep-days`` only while its last window ended within that many days
  of the newest window of the state (the data's time, not the clock's), so that ids that go away do not make the
  state grow for ever.

The run id covers the state's digest, so a rerun of a day from the same earlier output writes the same outputs;
the manifest names the file and its digest, and a replay of the run starts from the same state or refuses one
that changed since.

A stream with online calibration keeps its state in the runner (per-entity Beam state) and also writes it, so that
a restart on a runner that does not restore state (the DirectRunner, Prism, Flink without checkpoints) goes on
from it: ``calibration_state/stream-<start>/<entity>.parquet`` (``STATE_FOLDER``), one file per entity in the
state's schema, written over as the entity's calibration goes on (``stream_state_dir``; every few minutes of wall
clock and when the input ends, ``calibration._CalibrateEntity``). Each start of a stream writes into a folder of its
own, so a restarted stream never writes over the files it reads. Such a folder set is read as one state: an
entity's newest row by its last window end (``--calibration-from`` with a stream's output folder; a stream restarted
into its own output goes on from it unasked, after gathering the earlier starts' files into one:
``gather_stream_states``).
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

STATE_FILE = "calibration_state.parquet"
STATE_FOLDER = "calibration_state"  # a stream's: stream-<start>/<entity>.parquet
STATE_SCHEMA = pa.schema([
    pa.field("entity_id", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    # µs since the epoch: the end of the last window that joined the entity's history
    pa.field("last_window_end_us", pa.int64(), nullable=False),
    pa.field("calibration", pa.large_string(), nullable=False),  # OnlineTailCalibration.to_dict() as JSON
    # the history's scores, which the JSON then leaves out (a state written before this column keeps them there)
    pa.field("scores", pa.large_list(pa.field("element", pa.float64(), nullable=False)), nullable=False),
    # the sorted scores of the fit in use and of the seed (OnlineTailCalibration's calibration and seed, up to 2,000
    # each), which the JSON leaves out as well (null where there is no such fit; a state written before these
    # columns keeps them in the JSON): as JSON text they had been most of the time a state took to write and read
    pa.field("fit_scores", pa.large_list(pa.field("element", pa.float64(), nullable=False)), nullable=True),
    pa.field("seed_scores", pa.large_list(pa.field("element", pa.float64(), nullable=False)), nullable=True),
])
FITS = (("calibration", "fit_scores"), ("seed", "seed_scores"))  # (to_dict key, column of its sorted scores)
REQUIRED_COLUMNS = ("entity_id", "model_version", "last_window_end_us", "calibration")


class CalibrationStateError(ValueError):
    """A calibration state that cannot be used (one sentence)."""


class EntityState(NamedTuple):
    """One entity's kept calibration: its model version, the end of its last joined window (µs), the
    ``OnlineTailCalibration.to_dict()`` JSON and, as the bytes of float64s, the history's ``scores`` and the sorted
    scores of its fit in use and of its seed (each None where the JSON holds them, as a state file written before
    they had columns of their own does, or where there is no such fit)."""

    model_version: str
    last_window_end_us: int
    calibration: str
    scores: bytes | None = None
    fit_scores: bytes | None = None
    seed_scores: bytes | None = None

    def calibration_dict(self) -> dict:
        """The ``OnlineTailCalibration.to_dict()`` this state was made from."""
        data = json.loads(self.calibration)
        if self.scores is not None:
            data["scores"] = np.frombuffer(self.scores, dtype=np.float64)  # read-only: a history is never changed
        for (key, _), kept in zip(FITS, (self.fit_scores, self.seed_scores)):
            if kept is not None and isinstance(data.get(key), dict):
                data[key]["sorted_scores"] = np.frombuffer(kept, dtype=np.float64)
        return data

    def in_columns(self) -> "EntityState":
        """The same state with every array in its own field, none in the JSON (a state read from a file of an
        earlier format has some there)."""
        data = json.loads(self.calibration)
        if self.scores is not None and not any(isinstance(data.get(key), dict) and "sorted_scores" in data[key]
                                               for key, _ in FITS):
            return self
        return state_of(self.calibration_dict(), self.model_version, self.last_window_end_us)

    def online(self):
        """The ``OnlineTailCalibration`` this state keeps."""
        from seqwatch.models.thresholds import OnlineTailCalibration

        return OnlineTailCalibration.from_dict(self.calibration_dict())


def state_file(path: str) -> str:
    """The state file ``path`` names: a run's output folder (its ``calibration_state.parquet``) or the file."""
    if path.endswith(".parquet"):
        return path
    return f"{path.rstrip('/')}/{STATE_FILE}" if path else path


def check_state(path: str, missing_ok: bool = False) -> tuple[str, str]:
    """``(source, sha256)`` of the state ``path`` names (``state_source``: a file, or a stream's folder of them),
    once it is found to be one (every row read, its calibration too, so that a damaged one is refused before the
    run, not inside it); the sha256 is of the file's bytes, or of a folder's file names and digests
    (``_read_folder``). Raises ``CalibrationStateError`` with one sentence otherwise. ``missing_ok``: where
    neither the file nor ``path`` exists (the day before a series began has no output), ``(file, "")``."""
    file = state_source(path)
    # (an object store has no folders: a run's folder there is found by its manifest)
    if missing_ok and not any(FileSystems.exists(p) for p in (file, path, f"{path.rstrip('/')}/manifest.json")):
        return file, ""
    if not file.endswith(".parquet"):  # a stream's folder (state_source found its files)
        read, digest = _read_folder(file)
        for name, data in read:
            _checked_states(name, data)
        return file, digest
    if not FileSystems.exists(file):
        where = (f"{path} holds no {STATE_FILE}" if file != path and FileSystems.exists(path)
                 else f"{file} does not exist")
        raise CalibrationStateError(
            f"--calibration-from: {where}; it takes the output folder of an earlier run with --online-calibration")
    try:
        data, digest = _read(file)
    except OSError as exc:
        raise CalibrationStateError(f"--calibration-from: {file} is not a calibration state seqwatch can read "
                                    f"({str(exc).splitlines()[0]})") from None
    _checked_states(file, data)
    return file, digest


def _checked_states(file: str, data: bytes) -> dict:
    """The states of ``file`` (its bytes ``data``), once every row is found to be what a run writes; raises
    ``CalibrationStateError`` (one sentence) otherwise."""
    try:
        schema = pq.read_schema(io.BytesIO(data))
    except (OSError, pa.ArrowInvalid) as exc:
        raise CalibrationStateError(f"--calibration-from: {file} is not a calibration state seqwatch can read "
                                    f"({str(exc).splitlines()[0]})") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        raise CalibrationStateError(f"--calibration-from: {file} is not a calibration state written by seqwatch "
                                    f"(it has no {', '.join(missing)} column)")
    try:
        states = _states_of(data)
        _check_rows(states)
    except (ValueError, TypeError, KeyError, ArithmeticError, pa.ArrowException) as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise CalibrationStateError(f"--calibration-from: {file} is not a calibration state seqwatch can read "
                                    f"({reason[:300]})") from None
    return states


def state_source(path: str) -> str:
    """What ``--calibration-from path`` reads: a ``.parquet`` file as named; in a folder, a batch run's
    ``STATE_FILE`` where there is one, else a stream's ``STATE_FOLDER`` where it holds files (``path`` may also be
    that folder), else the ``STATE_FILE`` that is not there (for the error)."""
    if not path or path.endswith(".parquet"):
        return path
    file = state_file(path)
    if FileSystems.exists(file):
        return file
    base = path.rstrip("/")
    for folder in (base, f"{base}/{STATE_FOLDER}") if base.endswith(STATE_FOLDER) else (f"{base}/{STATE_FOLDER}",):
        if stream_state_files(folder):
            return folder
    return file


def stream_state_dir(output: str, started: float) -> str:
    """The folder a stream started at ``started`` (a time.time()) writes its entities' calibration into."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started)) + f"{int(started % 1 * 1e6):06d}Z"
    return f"{output.rstrip('/')}/{STATE_FOLDER}/stream-{stamp}"


def stream_state_files(folder: str, skip: str = "") -> list:
    """The entity files of the streams' folders in ``folder`` (``STATE_FOLDER``), sorted (by stream start, then
    name), but those of the folder ``skip`` (a running stream's own, which it writes while it reads the others)."""
    from seqwatch.pipelines.sinks import files_under

    try:
        found = files_under(folder, "stream-*/*.parquet")
    except (OSError, ValueError):  # (no such folder on an object store: Beam raises BeamIOError, an IOError)
        return []
    skip = skip.rstrip("/") + "/" if skip else ""
    return [path for path, _ in found if not (skip and path.startswith(skip))]


def stream_entity_file(folder: str, entity: str) -> str:
    """The file of ``entity``'s calibration in a stream's folder (``stream_state_dir``)."""
    from seqwatch.pipelines.sinks import safe_name

    return f"{folder.rstrip('/')}/{safe_name(entity)}.parquet"


def write_entity_state(folder: str, entity: str, state: EntityState) -> None:
    """Write (over) ``entity``'s file in a stream's folder with its ``state``."""
    from seqwatch.pipelines.sinks import write_parquet

    write_parquet(stream_entity_file(folder, entity), state_table({entity: state}), dictionary=False)


def gather_stream_states(folder: str, into: str, keep_us: int = 0) -> str:
    """Gather the entity files of a stream output's earlier starts (``folder``, its ``STATE_FOLDER``) into one file
    in the folder ``into``, each entity's latest row (``keep_us``: less the entities ``forget_stale`` leaves out),
    and delete the folders gathered. Returns the digest of ``folder`` as it is then (``check_state``'s), or "" where
    there was less than two files to gather (left as they were). A restarted stream calls it under its output lock
    before its job starts, so that its workers read one file, not one per entity, and each restart does not leave
    one more folder of files that every later start reads. The gathered file is written before anything is
    deleted: a stop in between leaves a row twice, which reading takes once."""
    from seqwatch.pipelines.sinks import delete_path, write_parquet

    read, _ = _read_folder(folder)
    if len(read) < 2:
        return ""
    base = folder.rstrip("/")
    starts = sorted({name[len(base) + 1:].split("/", 1)[0] for name, _ in read})
    states = forget_stale(_merged([_states_of(data) for _, data in read]), keep_us)
    write_parquet(f"{into.rstrip('/')}/entities.parquet", state_table(states), dictionary=False)
    for start in starts:
        delete_path(f"{base}/{start}")
    return _read_folder(folder)[1]


def _read_folder(folder: str, skip: str = "") -> tuple[list, str]:
    """``([(file, bytes)], sha256)`` of a stream folder's files (``stream_state_files``): the sha256 is of each
    file's name under ``folder`` and the sha256 of its bytes."""
    read, lines = [], []
    for name in stream_state_files(folder, skip):
        data, digest = _read(name)
        read.append((name, data))
        lines.append(f"{name[len(folder.rstrip('/')) + 1:]}\0{digest}\n")
    return read, hashlib.sha256("".join(lines).encode()).hexdigest()


def _merged(states: list) -> dict:
    """``{entity_id: EntityState}`` of several files' states (in the order written): each entity's with the latest
    last window end, the later file's of two equal."""
    merged: dict = {}
    for part in states:
        for entity, state in part.items():
            if entity not in merged or state.last_window_end_us >= merged[entity].last_window_end_us:
                merged[entity] = state
    return merged


def _read(file: str) -> tuple[bytes, str]:
    """The bytes of ``file`` and their sha256."""
    with FileSystems.open(file) as f:
        data = f.read()
    return data, hashlib.sha256(data).hexdigest()


def _check_rows(states: dict) -> None:
    """Raise where a row is not what a run writes: an id, a version and an end of the right types, and a
    calibration that ``OnlineTailCalibration.from_dict`` takes."""
    for entity, state in states.items():
        if not isinstance(entity, str) or not isinstance(state.model_version, str):
            raise ValueError(f"entity {entity!r} has no entity id or model version")
        try:
            state.online().calibration  # noqa: B018 (fits)
        except (ValueError, TypeError, KeyError, RuntimeError, ArithmeticError) as exc:
            raise ValueError(f"entity {entity!r}: its calibration does not load ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def read_states(file: str, sha256: str = "", skip: str = "") -> dict:
    """``{entity_id: EntityState}`` of a state file or a stream's folder of them (checked by ``check_state``;
    ``skip``: a folder of a running stream's own files, left out); with ``sha256``, raises ``InputChangedError``
    unless the state still holds what was checked (a state replaced while the run read it had been used by a run
    whose manifest and run id named the one before)."""
    folder = not file.endswith(".parquet")
    if folder:
        read, digest = _read_folder(file, skip)
    else:
        data, digest = _read(file)
    if sha256 and digest != sha256:
        from seqwatch.pipelines.sources import InputChangedError

        raise InputChangedError(f"the calibration state {file} (--calibration-from) is no longer the "
                                f"{'folder of files' if folder else 'file'} the run planned with")
    return _merged([_states_of(data) for _, data in read]) if folder else _states_of(data)


def _states_of(data: bytes) -> dict:
    file = pq.ParquetFile(io.BytesIO(data))
    arrays = [name for name in ("scores", "fit_scores", "seed_scores") if name in file.schema_arrow.names]
    table = file.read(columns=[*REQUIRED_COLUMNS, *arrays])
    columns = [table.column(name).to_pylist() for name in REQUIRED_COLUMNS]
    kept = [_score_arrays(table.column(name), nullable=name != "scores") if name in arrays
            else [None] * table.num_rows for name in ("scores", "fit_scores", "seed_scores")]
    states = {entity: EntityState(version, int(end), calibration, *held)
              for entity, version, end, calibration, *held in zip(*columns, *kept)}
    if len(states) != table.num_rows:
        raise ValueError("an entity has more than one row")
    return states


def _score_arrays(column: pa.ChunkedArray, nullable: bool = False) -> list:
    """Each row's list of scores as the bytes of its float64s, cut from one array of them all (None for a null
    row, where ``nullable``)."""
    lists = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if lists.null_count and not nullable:
        raise ValueError("an entity's scores are missing")
    lists = lists.cast(pa.large_list(pa.float64()))
    valid = lists.is_valid().to_numpy(zero_copy_only=False)
    offsets = lists.offsets.to_numpy() - lists.offsets[0].as_py()
    values = lists.flatten().to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return [values[lo:hi].tobytes() if ok else None
            for lo, hi, ok in zip(offsets[:-1].tolist(), offsets[1:].tolist(), valid.tolist())]


def state_table(states: dict) -> pa.Table:
    """``{entity_id: EntityState}`` as a table with ``STATE_SCHEMA``, by entity (the arrays in their columns, out of
    the JSON: ``EntityState.in_columns``)."""
    entities = sorted(states)
    rows = [states[entity].in_columns() for entity in entities]

    def column(name: str, nullable: bool) -> pa.Array:
        held = [getattr(row, name) for row in rows]
        arrays = [np.frombuffer(b, dtype=np.float64) if b is not None else np.zeros(0) for b in held]
        offsets = np.cumsum([0] + [len(a) for a in arrays], dtype=np.int64)
        values = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.float64)
        mask = pa.array([b is None for b in held]) if nullable and any(b is None for b in held) else None
        lists = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float64()), mask=mask)
        return lists.cast(STATE_SCHEMA.field(name).type)

    return pa.table({"entity_id": entities,
                     "model_version": [row.model_version for row in rows],
                     "last_window_end_us": [row.last_window_end_us for row in rows],
                     "calibration": [row.calibration for row in rows],
                     "scores": column("scores", False),
                     "fit_scores": column("fit_scores", True),
                     "seed_scores": column("seed_scores", True)}, schema=STATE_SCHEMA)


def write_states(path: str, judged: list, carried_from: str = "", carried_sha256: str = "",
                 keep_us: int = 0) -> tuple[int, int]:
    """Write the state of a run to ``path``: the ``(entity_id, EntityState)`` pairs it ``judged``, and every other
    entity of the state it started from (``carried_from``, a file, checked against ``carried_sha256`` as
    ``read_states`` does) as it was. ``keep_us`` (0: for ever): an entity whose last joined window ended more than
    this long before the newest one's in the state is left out (``forgotten``). Returns ``(entities written,
    entities forgotten)``."""
    from seqwatch.pipelines.sinks import write_parquet

    states = read_states(carried_from, carried_sha256) if carried_from else {}
    states.update(dict(judged))
    kept = forget_stale(states, keep_us)
    write_parquet(path, state_table(kept), dictionary=False)
    return len(kept), len(states) - len(kept)


def forget_stale(states: dict, keep_us: int) -> dict:
    """``states`` without the entities whose last joined window ended more than ``keep_us`` before the newest
    one's (an id that went away: a device replaced, ids that change from day to day); all of them where
    ``keep_us`` is 0. The newest end is the data's, not the clock's, so a rerun of a day keeps what it kept."""
    if not keep_us or not states:
        return dict(states)
    newest = max(state.last_window_end_us for state in states.values())
    return {entity: state for entity, state in states.items() if state.last_window_end_us >= newest - keep_us}


def state_of(calibration_dict: dict, model_version: str, last_window_end_us: int) -> EntityState:
    """The state of an ``OnlineTailCalibration.to_dict()``: its history's scores and its fits' sorted scores apart,
    the rest as JSON."""
    rest = {key: value for key, value in calibration_dict.items() if key != "scores"}
    fits = []
    for key, _ in FITS:
        fit = rest.get(key)
        if isinstance(fit, dict):
            rest[key] = {name: value for name, value in fit.items() if name != "sorted_scores"}
            fits.append(np.asarray(fit["sorted_scores"], dtype=np.float64).tobytes())
        else:
            fits.append(None)
    return EntityState(model_version, int(last_window_end_us), json.dumps(rest),
                       np.asarray(calibration_dict["scores"], dtype=np.float64).tobytes(), *fits)
