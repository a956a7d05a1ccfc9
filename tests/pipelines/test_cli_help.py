"""``seqwatch <command> --help`` explains every flag: the help text is the CLI's reference for its users."""
import argparse

from seqwatch.pipelines.cli import build_parser


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_flag_of_every_command_has_help():
    undocumented = [f"{name} {action.option_strings[0]}"
                    for name, command in _subcommands(build_parser()).items()
                    for action in command._actions
                    if action.option_strings and action.help in (None, "") and action.dest != "help"]
    assert undocumented == []


def test_the_readme_names_every_flag_of_every_command():
    """The README is the CLI's tour: each long flag of each command is named there (its "The command line" block,
    or the section of the feature it belongs to). Five flags of ``train`` and replay's ``--no-online-calibration``
    had been in ``--help`` only."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    unnamed = [f"{name} {flag}" for name, command in _subcommands(build_parser()).items()
               for action in command._actions for flag in action.option_strings
               if flag.startswith("--") and flag != "--help"
               and not re.search(re.escape(flag) + r"(?![A-Za-z0-9-])", readme)]
    assert unnamed == []


def test_the_top_level_description_names_every_command():
    parser = build_parser()
    assert all(name in parser.description for name in _subcommands(parser))


def test_version_gives_the_installed_versions_of_what_seqwatch_runs_on():
    """``seqwatch --version``: the line a bug report needs, the versions ``requirements.lock`` pins."""
    import platform
    import re
    import subprocess
    import sys
    from pathlib import Path

    lock = Path(__file__).resolve().parents[2] / "requirements.lock"
    pins = {re.sub(r"[-_.]+", "-", name).lower(): pin  # names as PEP 503 normalises them (great_expectations)
            for name, pin in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock.read_text(), flags=re.M)}
    run = subprocess.run([sys.executable, "-m", "seqwatch.pipelines.cli", "--version"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    line = run.stdout.strip()
    assert re.fullmatch(r"seqwatch \d+\.\d+\.\d+\S* \(.*, Python [\d.]+\)", line), line
    for name in ("apache-beam", "keras", "jax", "pandas", "pyarrow", "great-expectations"):
        assert f"{name} {pins[name]}" in line, (name, pins.get(name), line)
    assert line.endswith(f"Python {platform.python_version()})")
