"""Accuracy benchmarks: seqwatch on NAB, SKAB, appliance power and MIT-BIH ECG, each with its own protocol.

Run ``.venv/bin/python benchmarks/accuracy.py`` (what ``make bench-accuracy`` does) to run all four and rewrite
the accuracy section of ``BENCHMARKS.md`` (only the part between ``<!-- accuracy:start -->`` and
``<!-- accuracy:end -->``) and the figures in ``benchmarks/figures/``.

``--only nab,skab`` runs a subset and keeps the other data sets' tables from their last run. ``--quick`` is a
smoke run on a few files with few epochs (about two minutes): it prints the summary and writes figures under
``benchmarks/out/quick/``, and touches ``BENCHMARKS.md`` only when ``--output`` names a file.

Data: ``../shared/data`` next to the repository (or ``$SEQWATCH_DATA``); see each folder's README.md. Each
data set's protocol (what the detector trains on, what sets its thresholds, what it is tested on) is in the
docstring of its module, ``benchmarks/accuracy_<name>.py``, and in the generated section.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

os.environ.setdefault("KERAS_BACKEND", "jax")

import accuracy_common as common  # noqa: E402  (sys.path set above)
import accuracy_report as report  # noqa: E402

RUNNERS = {"nab": "accuracy_nab", "skab": "accuracy_skab", "energy": "accuracy_energy", "ecg": "accuracy_ecg"}
DATA_FOLDERS = {"nab": "nab", "skab": "skab", "energy": "appliance_power", "ecg": "mitbih_ecg"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(RUNNERS),
                        help=f"comma-separated data sets to run, of {', '.join(RUNNERS)} (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: a few files, few epochs; BENCHMARKS.md untouched unless --output is given")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown file whose accuracy section is rewritten (default: BENCHMARKS.md at the "
                             "repository root; none for --quick)")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: re-render the accuracy section from the results stored in it (after "
                             "editing the report's text)")
    parser.add_argument("--figures", type=Path, default=None,
                        help="folder for the PNG figures (default: benchmarks/figures, or benchmarks/out/quick/figures "
                             "with --quick)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown or not names:
        parser.error(f"--only must name data sets among {', '.join(RUNNERS)}, got {args.only!r}")
    args.names = [n for n in RUNNERS if n in names]
    if args.output is None and not args.quick:
        args.output = common.REPO / "BENCHMARKS.md"
    if args.figures is None:
        args.figures = common.REPO / "benchmarks" / ("out/quick/figures" if args.quick else "figures")
    return args


def _enable_compilation_cache() -> Path:
    """A fresh persistent XLA cache for this run: the many small models share layer shapes, so their training
    and prediction steps compile once instead of once per model (about 10 s each on this machine). Fresh per
    run, so the measured time does not depend on earlier runs."""
    import jax

    cache = Path(tempfile.mkdtemp(prefix="seqwatch-bench-xla-"))
    jax.config.update("jax_compilation_cache_dir", str(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return cache


def _command(argv) -> str:
    python = os.path.relpath(sys.executable, common.REPO) if sys.executable.startswith(str(common.REPO)) else "python"
    script = os.path.relpath(Path(__file__).resolve(), common.REPO)
    return " ".join([python, script] + list(argv))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.render_only:
        return _render_only(args.output or common.REPO / "BENCHMARKS.md")
    root = common.data_root()
    missing = [n for n in args.names if not (root / DATA_FOLDERS[n]).is_dir()]
    if missing:
        sys.stderr.write(f"data for {', '.join(missing)} not found under {root} (set SEQWATCH_DATA)\n")
        return 2
    cache = _enable_compilation_cache()
    started = time.perf_counter()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = _command(argv)
    results, per_dataset = {}, {}
    try:
        import importlib

        for name in args.names:
            module = importlib.import_module(RUNNERS[name])
            progress = common.Progress(name, start=started)
            progress("starting" + (" (quick)" if args.quick else ""))
            t0 = time.perf_counter()
            result = module.run(quick=args.quick, progress=progress, figures_dir=args.figures)
            per_dataset[name] = time.perf_counter() - t0
            result["run"] = {"date": date, "command": command}
            results[name] = result
            progress(f"done in {per_dataset[name] / 60:.1f} min")
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    total = time.perf_counter() - started
    run = {"command": command, "date": date, "seconds": total, "per_dataset": per_dataset,
           "machine": common.machine_description(), "libraries": common.library_versions()}
    print(_console_summary(results, total))
    if args.output is not None:
        merged = {k: v for k, v in report.stored_results(args.output).items() if k in report.DATASETS}
        merged.update(results)
        ordered = {k: merged[k] for k in report.DATASETS if k in merged}
        body = report.render(ordered, run, args.output.resolve().parent)
        report.write_section(args.output, body, {**ordered, report.RUN_KEY: run})
        sys.stderr.write(f"wrote the accuracy section of {args.output} ({total / 60:.1f} min)\n")
    return 0


def _render_only(path: Path) -> int:
    stored = report.stored_results(path)
    run = stored.get(report.RUN_KEY)
    results = {k: stored[k] for k in report.DATASETS if k in stored}
    if not results or run is None:
        sys.stderr.write(f"{path} holds no stored accuracy results to render\n")
        return 2
    report.write_section(path, report.render(results, run, path.resolve().parent), {**results, report.RUN_KEY: run})
    sys.stderr.write(f"re-rendered the accuracy section of {path} from its stored results\n")
    return 0


def _console_summary(results: dict, total: float) -> str:
    lines = [f"accuracy benchmarks finished in {total / 60:.1f} min"]
    if "nab" in results:
        r = results["nab"]["results"]
        profiles = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
        for name, label in (("fine_tuning_cooldown_cv", "NAB with online fine-tuning and the cross-validated cooldown"),
                            ("fine_tuning_alert_starts", "NAB with online fine-tuning"),
                            ("alert_starts", "NAB, probationary period only")):
            if name in r:
                per_row = report.nab_per_row(name)
                lines.append(f"{label}, normalised (alert starts) standard/lowFP/lowFN: "
                             + " / ".join(f"{r[name][p]['normalized']:.1f}" for p in profiles)
                             + "; per row: " + " / ".join(f"{r[per_row][p]['normalized']:.1f}" for p in profiles))
    if "skab" in results:
        for key in ("per_file_400", "anomaly_free", "anomaly_free_online"):
            s = results["skab"]["results"][key]
            c = s["changepoint"]
            lines.append(f"SKAB {key}: F1 {s['f1']:.3f} FAR {100 * s['far']:.2f}% MAR {100 * s['mar']:.2f}% "
                         f"(PR AUC {s['pr_auc']:.3f}); changepoint NAB {c['standard']:.2f}/{c['low FP']:.2f}/"
                         f"{c['low FN']:.2f}")
    if "energy" in results:
        o = results["energy"]["overall"]
        lines.append(f"Energy: event F1 {o['event_f1']:.3f} (P {o['event_precision']:.2f} R {o['event_recall']:.2f}), "
                     f"PR AUC {o['pr_auc']:.3f}")
    if "ecg" in results:
        o = results["ecg"]["overall"]
        lines.append(f"ECG: event F1 {o['f1']:.3f} (P {o['precision']:.2f} R {o['recall']:.2f}), "
                     f"PR AUC {o['pr_auc']:.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
