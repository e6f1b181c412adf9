"""README.md's code runs as shown: the routed app and its test."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_routed_app_is_under_25_lines() -> None:
    routed = next(block for block in python_blocks() if "Router(" in block)
    assert len([line for line in routed.splitlines() if line.strip()]) < 25


async def test_the_readme_app_passes_the_readme_test() -> None:
    namespace: dict[str, Any] = {}
    for block in python_blocks():
        if "Router(" in block or "async def test_room" in block:
            exec(compile(block, str(README), "exec"), namespace)
    await namespace["test_room"]()
