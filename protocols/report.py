"""Text output shared by the command line and the experiments: aligned tables."""
from __future__ import annotations

from typing import Any, List


def table(headers: List[str], rows: List[List[Any]]) -> str:
    """Rows as a right-aligned text table with a rule under the header; floats to 4 decimals."""
    cells = [[str(h) for h in headers]] + [[f"{c:.4f}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
