"""Building blocks of every report: styled lines for a terminal (rich) and Markdown cells, code spans and fences.

Pure and reconciler-free: the plan report, the status report and the GitHub output all render through these,
so a table cell or a code span is escaped the same way everywhere.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence

from rich.console import Console
from rich.text import Text

Segment = tuple[str, str]  # (text, rich style; "" for none)
Line = list[Segment]


def to_string(lines: Sequence[Line], color: bool) -> str:
    """The lines as plain text, or with ANSI colours (`color`) for a terminal."""
    if not color:
        return "".join("".join(text for text, _ in line) + "\n" for line in lines)
    buffer = io.StringIO()
    console = Console(
        file=buffer,
        force_terminal=True,
        color_system="standard",
        width=100_000,
        soft_wrap=True,
        highlight=False,
        markup=False,
        emoji=False,
    )
    for line in lines:
        console.print(Text.assemble(*((text, style) if style else text for text, style in line)))
    return buffer.getvalue()


def cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") if text else "—"


def code(text: str) -> str:
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def fenced(body: str, lang: str) -> str:
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`{3,}", body)), default=0) + 1)
    return f"{fence}{lang}\n{body}\n{fence}"


def escape_markdown(text: str) -> str:
    """`text` as literal Markdown on one line: no HTML, emphasis, code, links, tables or headings from it."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for char in "\\`*_[]|#":
        text = text.replace(char, "\\" + char)
    return " ".join(text.split())
