"""The validated configuration of a batch run (``RunConfig``), built by the CLI or by users' code."""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

from seqwatch.schemas.mapping import InputMapping

DEFAULT_PANE_STEPS = 4096
HORIZON_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z
DAY_US = 86_400_000_000
# How far ahead of the wall clock a stream's reading may be when it is processed (the batch pipeline's default
# future tolerance): the late gate quarantines readings further ahead, and broker readers' event time ignores them.
STREAM_FUTURE_TOLERANCE_US = DAY_US


def stream_future_bound_us(now_us: int | None = None) -> int:
    """The latest event time a stream's reading may have when it is processed at ``now_us`` (µs; None: the wall
    clock): the late gate quarantines later readings, broker readers' event time leaves them out and stamps no batch
    later."""
    return int(time.time() * 1e6 if now_us is None else now_us) + STREAM_FUTURE_TOLERANCE_US


# Event time plus a span of seconds must stay within the int64 µs that Beam's timers and coders hold (a cooldown of
# 1e15 s had overflowed them, with a traceback); a century is beyond any window, cooldown or lateness meant.
MAX_SECONDS = 100 * 365.25 * 86400


@dataclass(frozen=True)
class RunConfig:
    """``inputs``: file paths or globs; ``output``: the output folder; ``model_dir``: a model artifact;
    ``suite``: a bundled suite family or a suite file; ``run_id``: derived from inputs, model and settings when
    empty, so a rerun of the same input writes the same files; ``pane_steps``: pane length in model steps
    (rounded up to a multiple of the stride); ``earliest_us``/``future_tolerance_us``: readings before the
    horizon or this far after the run starts are quarantined. ``local_panes``: cut the panes that one input file
    holds alone without the GroupByKey (``seqwatch.pipelines.locality``; the same outputs, less memory and
    time); ``False`` sends every pane through it. ``workers``: DirectRunner worker processes; 0 chooses (see
    ``seqwatch.pipelines.batch.choose_workers``). Beam flags given with the run take precedence over both.
    ``alert_cooldown_us``: an anomalous window that starts within this long after an incident's end continues
    that incident (one alert for a flapping signal); 0: only windows that overlap or touch merge.
    ``online_calibration``: judge each entity's windows by its own earlier scores instead of the model's one
    threshold (``seqwatch.pipelines.calibration``); a batch run with it writes each entity's calibration beside its
    sinks (``keep_calibration_state``; a replay's does not), and ``calibration_from`` (an earlier run's output folder,
    or its state file) starts each entity's calibration where that run left it
    (``seqwatch.pipelines.calibration_state``); ``calibration_keep_days`` (0: for ever) leaves out of the state it
    writes the entities whose last window ended more than that many days before the newest. ``known_duplicates``: ``(source, line, channel)`` of readings
    to quarantine as ``duplicate`` before any check (a replay's: readings its run quarantined as repeats of a reading
    it kept, which may lie in a file the replay does not read). ``commit_in_job``: the job's last step moves
    the outputs into place and writes the manifest, not the process that launched it (``batch.CommitInJob``), so
    a launcher that does not wait for the job's end (a Dataflow Flex Template) leaves committed outputs.
    ``max_quarantined_share``: the share of quarantined readings above which a finished run fails its scheduler's
    task although its outputs are written (``batch.quarantine_gate``; None: only when every reading was)."""

    inputs: tuple
    output: str
    model_dir: str
    mapping: InputMapping = field(default_factory=InputMapping)
    suite: str = "sensor"
    run_id: str = ""
    pane_steps: int = DEFAULT_PANE_STEPS
    earliest_us: int = HORIZON_US
    future_tolerance_us: int = DAY_US
    chunk_rows: int = 100_000
    local_panes: bool = True
    workers: int = 0
    alert_cooldown_us: int = 0
    online_calibration: bool = False
    calibration_from: str = ""
    calibration_keep_days: float = 0.0
    keep_calibration_state: bool = True
    known_duplicates: tuple = ()
    commit_in_job: bool = False
    max_quarantined_share: float | None = None

    def __post_init__(self):
        if not self.inputs:
            raise ValueError("at least one input is needed")
        if self.run_id is None:  # as the library took it before the check: derive one
            object.__setattr__(self, "run_id", "")
        check_run_id(self.run_id)
        if not self.output:
            raise ValueError("an output folder is needed")
        if self.pane_steps < 1:
            raise ValueError(f"pane_steps must be >= 1, got {self.pane_steps}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 chooses), got {self.workers}")
        if self.chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {self.chunk_rows}")
        if self.calibration_from and not self.online_calibration:
            raise ValueError("calibration_from continues an earlier run's online calibration: it needs "
                             "online_calibration=True")
        if not (math.isfinite(self.calibration_keep_days) and self.calibration_keep_days >= 0):
            raise ValueError(f"calibration_keep_days must be a positive number of days (0: for ever), got "
                             f"{self.calibration_keep_days:g}")
        if self.calibration_keep_days and not self.online_calibration:
            raise ValueError("calibration_keep_days limits what the online calibration's state keeps: it needs "
                             "online_calibration=True")
        share = self.max_quarantined_share
        if share is not None and not (math.isfinite(share) and 0 <= share <= 1):
            raise ValueError(f"--max-quarantined-share must be a fraction from 0 to 1 (0.2: a fifth of the readings; "
                             f"1: never exit 3), got {share:g}")
        if self.alert_cooldown_us < 0:
            raise ValueError(f"the alert cooldown must be >= 0 seconds, got {self.alert_cooldown_us / 1e6:g}")

    @property
    def calibration_keep_us(self) -> int:
        """``calibration_keep_days`` in µs (0: for ever)."""
        return int(round(self.calibration_keep_days * DAY_US))

    @property
    def writes_calibration_state(self) -> bool:
        """Whether a batch run of this config writes ``calibration_state.parquet`` (it always does with online
        calibration, a replay's excepted)."""
        return self.online_calibration and self.keep_calibration_state

    def settings(self) -> dict:
        """The settings that decide what is written (for the run id and the manifest); not where."""
        data = dataclasses.asdict(self)
        data["mapping"] = self.mapping.to_dict()
        data["inputs"] = list(self.inputs)
        for where in ("run_id", "output", "local_panes", "workers", "keep_calibration_state",
                      "commit_in_job", "max_quarantined_share"):  # not what
            data.pop(where)
        for added in ("alert_cooldown_us", "online_calibration", "calibration_from", "calibration_keep_days",
                      "known_duplicates"):
            if not data[added]:  # off: earlier runs keep their run ids
                data.pop(added)
        if "known_duplicates" in data:  # a replay's: how many (the records are in its quarantine)
            data["known_duplicates"] = len(self.known_duplicates)
        return data


LONGEST_RUN_ID = 200


def check_run_id(run_id: str) -> None:
    """A run id names a folder under the output (``_staging-<run id>``): one without a path separator or a control
    character, of at most ``LONGEST_RUN_ID`` characters (``x/../../other`` had staged, and deleted, a folder
    beside the output)."""
    if not isinstance(run_id, str):
        raise ValueError(f"the run id must be text, got {run_id!r}")
    bad = [c for c in run_id if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad or len(run_id) > LONGEST_RUN_ID:
        why = (f"holds {bad[0]!r}" if bad else f"is {len(run_id)} characters long")
        raise ValueError(f"the run id {run_id[:60]!r} {why}: it names a folder under the output, so it may hold "
                         f"no '/', '\\' or control character and at most {LONGEST_RUN_ID} characters")

