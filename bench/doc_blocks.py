"""Rewrite a marked block of a document with text a bench script produced (never by hand)."""

from __future__ import annotations

import re
from pathlib import Path


def markers(name: str, writer: str | None = None) -> tuple[str, str]:
    """A block's markers; ``writer``: the bench script that writes it when its name is not the block's."""
    script = writer or f"{name.replace('-', '_')}.py"
    return f"<!-- {name}:begin (bench/{script} writes this block) -->", f"<!-- {name}:end -->"


def rewrite_block(path: Path, name: str, text: str, writer: str | None = None) -> None:
    """Replace what lies between the ``name`` markers of ``path`` by ``text``."""
    begin, end = markers(name, writer)
    document = path.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(document):
        raise SystemExit(f"{path.name} has no {begin} ... {end} block to rewrite")
    path.write_text(pattern.sub(lambda _: f"{begin}\n\n{text.strip()}\n\n{end}", document))


def markdown_table(rows: list[dict]) -> str:
    """Rows of equal keys as a Markdown table (the keys of the first row are the header)."""
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows])
