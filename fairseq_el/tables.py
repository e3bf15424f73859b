"""Tables for reports and the console, written in one place.

:func:`markdown_table` is what every markdown report of the package prints (benchmark runs,
budgets, the roofline model, the GQA study, the GPU check); :func:`text_table` aligns columns for a
plain-text block (the recipes' stock | EL comparison). Cells are formatted by the caller; these
functions only lay them out.
"""

from typing import Iterable, List, Sequence


def markdown_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = ""
) -> str:
    """A GitHub markdown table. ``align`` has one letter per column, ``l`` (the default for
    columns it does not cover) or ``r`` (numbers); a cell is ``str(value)``."""
    if set(align) - {"l", "r"} or len(align) > len(headers):
        raise ValueError(f"align {align!r}: one of 'l' or 'r' per column ({len(headers)})")
    rule = ["---:" if a == "r" else "---" for a in align.ljust(len(headers), "l")]
    lines = [_row(headers), "|" + "|".join(rule) + "|"]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"a row of {len(row)} cells under {len(headers)} headers: {row}")
        lines.append(_row(row))
    return "\n".join(lines)


def text_table(headers: Sequence[str], rows: Iterable[Sequence[object]], width: int = 8) -> str:
    """Plain-text columns: the first left-aligned, the others right-aligned in at least ``width``
    characters, two spaces apart."""
    cells: List[List[str]] = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    widths[1:] = [max(width, w) for w in widths[1:]]
    return "\n".join(
        "  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])])
        for r in cells
    )


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"
