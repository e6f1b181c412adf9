"""The documentation: the mkdocs site builds strictly, every page is in its navigation, every
Python block in README.md and docs/ runs as shown, and every public name has a docstring.

The convention for code blocks (README.md and docs/**/*.md):

- every ```` ```python ```` block is a complete module: imports included, no top-level ``await``,
  no placeholder names.  It is executed in a fresh namespace (``__name__`` is not
  ``"__main__"``, so ``if __name__ == "__main__": trio.run(main)`` may end it) with the
  repository root on ``sys.path``; then ``async def main()``, if it defines one, and every
  ``test_*`` function it defines run under ``trio.run``, each bounded by 20 s.  Nothing may need a
  network server: use the test client (``trio_asgi_ws.testing.connect``).
- a block holding only ``--8<-- "examples/<file>.py"`` lines includes those files (pymdownx.snippets):
  each must exist; the files are tested by tests/test_examples*.py.
- every other block names its language (``sh``, ``yaml``, ``text``, ``json``, ``console``, ...), so
  no Python hides in an untagged block.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BLOCK_TIMEOUT = 20.0
PYTHON_TAGS = {"python", "py", "python3"}


# --- the site -------------------------------------------------------------------------------


def test_the_site_builds_with_mkdocs_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # The API reference is rendered from the docstrings, with signatures.
    reference = (site / "reference" / "trio_asgi_ws" / "index.html").read_text()
    assert 'id="trio_asgi_ws.WebSocket.receive"' in reference
    assert "Safe to cancel" in reference
    # The changelog page includes CHANGELOG.md itself.
    changelog = (ROOT / "CHANGELOG.md").read_text().splitlines()[0].lstrip("# ").strip()
    assert changelog in (site / "changelog" / "index.html").read_text()


def _nav_files(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _nav_files(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from _nav_files(value)


def _mkdocs_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return config


def test_every_page_under_docs_is_in_the_nav_and_the_nav_names_no_missing_file() -> None:
    nav = list(_nav_files(_mkdocs_config()["nav"]))
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    assert sorted(pages - set(nav)) == [], "pages under docs/ that the nav does not reach"
    assert sorted(set(nav) - pages) == [], "nav entries with no file under docs/"


def _reference_pages() -> dict[str, Path]:
    pages = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        match = re.search(r"^::: (\S+)$", page.read_text(), flags=re.MULTILINE)
        assert match, f"{page.name} renders no module"
        pages[match.group(1)] = page
    return pages


PUBLIC_MODULES = [
    "trio_asgi_ws",
    "trio_asgi_ws.routing",
    "trio_asgi_ws.broadcast",
    "trio_asgi_ws.testing",
    "trio_asgi_ws.server",
    "trio_asgi_ws.metrics",
    "trio_asgi_ws.datastructures",
    "trio_asgi_ws.exceptions",
    "trio_asgi_ws.websockets",
    "trio_asgi_ws.requests",
    "trio_asgi_ws.endpoints",
    "trio_asgi_ws.backends.base",
    "trio_asgi_ws.integrations.starlette",
    "trio_asgi_ws.integrations.fastapi",
]
REFERENCED_MODULES = [
    "trio_asgi_ws",
    "trio_asgi_ws.routing",
    "trio_asgi_ws.broadcast",
    "trio_asgi_ws.testing",
    "trio_asgi_ws.server",
    "trio_asgi_ws.metrics",
    "trio_asgi_ws.integrations.starlette",
    "trio_asgi_ws.integrations.fastapi",
    "trio_asgi_ws.backends.base",
    "trio_asgi_ws.datastructures",
    "trio_asgi_ws.exceptions",
]


def test_the_api_reference_has_one_page_per_public_module_listing_its_all() -> None:
    pages = _reference_pages()
    assert sorted(pages) == sorted(REFERENCED_MODULES)
    for module, page in pages.items():
        listed = re.findall(r"^        - (\S+)$", page.read_text(), flags=re.MULTILINE)
        assert listed == list(importlib.import_module(module).__all__), page.name


# --- code blocks ------------------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
INCLUDE = re.compile(r"""^--8<--\s+["'](?P<path>[^"']+)["']\s*$""")


@dataclass(frozen=True)
class Block:
    file: Path
    line: int  # 1-based line of the opening fence
    tag: str
    code: str

    @property
    def id(self) -> str:
        where = self.file.relative_to(ROOT).as_posix() if self.file.is_relative_to(ROOT) else self.file.name
        return f"{where}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with its language tag ("" when it has none)."""
    blocks = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        tag = opening["info"].strip().split(" ")[0].strip("{}.").lower() if opening["info"].strip() else ""
        body = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        else:
            raise AssertionError(f"{path}:{i + 1}: fence never closed")
        blocks.append(Block(path, i + 1, tag, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


def python_blocks() -> list[Block]:
    return [block for path in markdown_files() for block in fenced_blocks(path) if block.tag in PYTHON_TAGS]


def _bounded(function: Callable[[], Any]) -> Callable[[], Any]:
    async def run() -> None:
        with trio.fail_after(BLOCK_TIMEOUT):
            await function()

    return run


def run_block(block: Block) -> list[str]:
    """Run one Python block as the convention says; returns what it ran (``main``, ``test_*``).

    Raises whatever the block raises (or ``AssertionError`` for a missing include)."""
    includes = [INCLUDE.match(line.strip()) for line in block.code.splitlines() if line.strip()]
    if any(includes):
        assert all(includes), f"{block.id}: a block mixes --8<-- includes with code"
        for include in includes:
            assert include is not None
            included = ROOT / include["path"].split(":")[0]
            assert included.is_file(), f"{block.id}: includes {include['path']}, which does not exist"
        return ["include"]
    namespace: dict[str, Any] = {"__name__": "__docs_block__"}
    exec(compile(block.code, block.id, "exec"), namespace)
    ran = []
    runnable = ["main"] if callable(namespace.get("main")) else []
    runnable += sorted(name for name in namespace if name.startswith("test_") and callable(namespace[name]))
    for name in runnable:
        function = namespace[name]
        if inspect.iscoroutinefunction(function):
            trio.run(_bounded(function))
        else:
            function()
        ran.append(name)
    return ran


@pytest.mark.parametrize("block", python_blocks(), ids=lambda block: block.id)
def test_python_block_runs_as_shown(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    run_block(block)


def test_every_block_names_its_language() -> None:
    untagged = [block.id for path in markdown_files() for block in fenced_blocks(path) if not block.tag]
    assert untagged == []


def test_the_block_runner_fails_broken_blocks_and_runs_main_and_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n```python\nx = undefined_name\n```\n\n"  # a placeholder name
        "```python\nasync def main():\n    assert 1 == 2\n```\n\n"  # main fails
        "- in a list:\n\n  ```python\n  async def test_a():\n      raise KeyError('a')\n  ```\n\n"
        "```python\n--8<-- \"examples/no_such_file.py\"\n```\n\n"
        "```python\nimport trio\n\nasync def main():\n    await trio.sleep_forever()\n```\n\n"
        "```python\nimport trio\n\nseen = []\n\nasync def main():\n    seen.append('main')\n\n"
        "def test_sync():\n    seen.append('sync')\n\nif __name__ == '__main__':\n    trio.run(main)\n```\n\n"
        "```python\nawait something()\n```\n\n"
        "```python\n--8<-- \"examples/echo.py\"\n```\n"
    )
    blocks = fenced_blocks(page)
    assert [block.line for block in blocks] == [3, 7, 14, 19, 23, 30, 45, 49]
    with pytest.raises(NameError):
        run_block(blocks[0])
    with pytest.raises(AssertionError):
        run_block(blocks[1])
    with pytest.raises(KeyError):
        run_block(blocks[2])
    with pytest.raises(AssertionError, match=r"no_such_file\.py, which does not exist"):
        run_block(blocks[3])
    monkeypatch.setattr("tests.test_docs.BLOCK_TIMEOUT", 0.1)
    with pytest.raises(trio.TooSlowError):
        run_block(blocks[4])
    assert run_block(blocks[5]) == ["main", "test_sync"]
    with pytest.raises(SyntaxError):
        run_block(blocks[6])
    assert run_block(blocks[7]) == ["include"]


# --- docstrings -------------------------------------------------------------------------------


def _griffe_package() -> Any:
    griffe = pytest.importorskip("griffe")
    return griffe.load("trio_asgi_ws", search_paths=[str(ROOT)], resolve_aliases=True)


def _target(obj: Any) -> Any:
    return obj.final_target if obj.is_alias else obj


def _undocumented() -> list[str]:
    package = _griffe_package()
    missing = []
    for module_name in PUBLIC_MODULES:
        module = package[module_name.partition(".")[2]] if "." in module_name else package
        if not module.docstring:
            missing.append(module_name)
        for name in importlib.import_module(module_name).__all__:
            obj = _target(module[name])
            if not obj.docstring:
                missing.append(f"{module_name}.{name}")
            if not obj.is_class:
                continue
            for member_name, member in obj.members.items():
                if member_name.startswith("_") and member_name not in ("__aenter__", "__aexit__", "__call__"):
                    continue
                member = _target(member)
                is_method = member.is_function or (member.is_attribute and "property" in member.labels)
                if is_method and not member.docstring:
                    missing.append(f"{module_name}.{name}.{member_name}")
    return sorted(set(missing))


# trio_asgi_ws/server.py is being changed under another part of issue 14 (not by the docstring
# pass); its two undocumented members are tolerated here until it gets them.  Empty this set then.
def test_every_public_name_and_public_method_has_a_docstring() -> None:
    assert sorted(_undocumented()) == []


BEHAVIOUR_DOCUMENTED = {
    # name: words its docstring must use (cancellation, disconnect, a full buffer)
    "trio_asgi_ws.websockets.WebSocket": ["cancel", "disconnect", "overflow"],
    "trio_asgi_ws.websockets.WebSocket.receive": ["cancel", "disconnect"],
    "trio_asgi_ws.websockets.WebSocket.send": ["cancel", "gone"],
    "trio_asgi_ws.websockets.WebSocket.close": ["cancel", "gone"],
    "trio_asgi_ws.websockets.WebSocket.__aexit__": ["cancel", "close_timeout"],
    "trio_asgi_ws.broadcast.Broadcast.publish": ["cancel", "full"],
    "trio_asgi_ws.broadcast.Broadcast.forward": ["cancel", "stops reading"],
    "trio_asgi_ws.broadcast.Subscription.receive": ["cancel"],
    "trio_asgi_ws.broadcast.Subscription": ["full"],
    "trio_asgi_ws.testing.connect": ["timeout", "cancel"],
    "trio_asgi_ws.testing.TestWebSocket.receive": ["timeout", "close"],
}


@pytest.mark.parametrize(("name", "words"), sorted(BEHAVIOUR_DOCUMENTED.items()))
def test_blocking_apis_say_what_cancellation_disconnect_and_a_full_buffer_do(
    name: str, words: list[str]
) -> None:
    obj = _target(_griffe_package()[name.removeprefix("trio_asgi_ws.")])
    text = " ".join(obj.docstring.value.lower().split()) if obj.docstring else ""
    assert [word for word in words if word not in text] == []
