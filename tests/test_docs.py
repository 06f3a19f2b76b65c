"""Every ```python block in the README and docs/ runs as written (```py blocks are illustrative)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for page in PAGES:
        text = page.read_text()
        for i, m in enumerate(BLOCK.finditer(text)):
            out.append((page.name, i, m.group(1)))
    return out


@pytest.mark.parametrize(("page", "index", "code"), _blocks(), ids=lambda v: str(v)[:20])
def test_doc_example_runs(page: str, index: int, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(code, f"{page}[{index}]", "exec"), {"__name__": "__doc_example__"})
