"""Pure. Text rendering of what a node reports, for ``ipop status`` and ``ipop simulate``.

The renderer knows no schema: the node's status is an object of sections (``node``, then one per
component), and each section is shown as aligned ``key  value`` lines for its scalars, then a table for
each list of objects (links, leases, records: columns are the union of the objects' keys, in first-seen
order), then nested objects indented. So whatever a component adds to its ``status()`` appears without
a change here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

INDENT = "  "


def format_value(value: Any) -> str:
    """One cell: floats with at most three decimals, lists comma-separated, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".")
        return text if text not in ("", "-0") else "0"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value) if value else "-"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) or "-"
    return str(value)


def _is_table(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, Mapping) for v in value)


def render_table(rows: Sequence[Mapping[str, Any]], indent: str = "") -> list[str]:
    """Rows of objects as a table with a header line."""
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = [indent + "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.extend(
        indent + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )
    return lines


def render_mapping(data: Mapping[str, Any], indent: str = "") -> list[str]:
    """Scalars as aligned lines, then tables, then nested objects."""
    scalars = [(k, v) for k, v in data.items() if not _is_table(v) and not _nested(v)]
    lines: list[str] = []
    if scalars:
        width = max(len(k) for k, _ in scalars)
        lines.extend(f"{indent}{k.ljust(width)}  {format_value(v)}" for k, v in scalars)
    for key, value in data.items():
        if _is_table(value):
            lines.append(f"{indent}{key} ({len(value)})")
            lines.extend(render_table(value, indent + INDENT))
        elif _nested(value):
            lines.append(f"{indent}{key}")
            lines.extend(render_mapping(value, indent + INDENT))
    return lines


def _nested(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and any(_is_table(v) or isinstance(v, Mapping) for v in value.values())
    )


def render_status(status: Mapping[str, Any]) -> str:
    """The whole ``ipop status`` answer: one block per section, ``node`` first."""
    blocks: list[str] = []
    for section, body in status.items():
        if isinstance(body, Mapping):
            blocks.append("\n".join([f"[{section}]", *render_mapping(body, INDENT)]))
        else:
            blocks.append(f"[{section}]\n{INDENT}{format_value(body)}")
    return "\n\n".join(blocks)
