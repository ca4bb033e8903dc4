"""Print the package's ``Any`` density (occurrences per 1,000 lines) and fail above the project's
bound."""

from __future__ import annotations

import pathlib
import re
import sys

BOUND = 20.0
PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "flowpilot_analytics"


def main() -> int:
    lines = found = 0
    for path in sorted(PACKAGE.glob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines += len(text.splitlines())
        found += len(re.findall(r"\bAny\b", text))
    density = 1000 * found / lines
    print(f"Any density: {found} in {lines} lines = {density:.1f} per 1,000 (bound {BOUND:.0f})")
    return 0 if density <= BOUND else 1


if __name__ == "__main__":
    sys.exit(main())
