"""Rewriting one marked section of BENCHMARKS.md, so each benchmark owns its part and leaves the others."""
from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def replace_section(name: str, text: str, path: Path = BENCHMARKS_MD) -> None:
    """Put ``text`` between ``<!-- name:start -->`` and ``<!-- name:end -->`` (appended when absent)."""
    current = path.read_text() if path.exists() else "# seqwatch benchmarks\n"
    block = f"<!-- {name}:start -->\n{text.rstrip()}\n<!-- {name}:end -->"
    pattern = rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->"
    if f"<!-- {name}:start -->" in current:
        current = re.sub(pattern, lambda _: block, current, flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    path.write_text(current)
