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


def test_the_top_level_description_names_every_command():
    parser = build_parser()
    assert all(name in parser.description for name in _subcommands(parser))
