"""README.md as a new user reads it: its two commands (the demo, and the tests through the one
script CI runs too), its routed app, and the script's message on a machine where it cannot
install the system packages.  (tests/test_docs.py runs every Python block of the README.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SCRIPT = ROOT / "scripts" / "test"
SYSTEM_PACKAGES = ["redis-server", "redis-tools", "chromium", "chromium-driver", "prometheus"]


def blocks(tag: str) -> list[str]:
    return re.findall(rf"```{tag}\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_gives_the_demo_command_then_the_test_command() -> None:
    demo, tests = blocks("sh")[:2]
    assert demo.strip() == (
        "python3 -m venv .venv && .venv/bin/pip install -q -e . && "
        ".venv/bin/python -m trio_asgi_ws examples.chat:app"
    )
    assert tests.strip() == "./scripts/test"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    command = blocks("sh")[1].strip()
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line and line[0] != "#"]
    assert command in ci
    assert os.access(SCRIPT, os.X_OK)


def test_the_readme_names_every_system_package_the_script_installs() -> None:
    script = SCRIPT.read_text()
    installs = re.findall(r"\|\| missing\+=\((\S+)\)", script)
    assert installs == SYSTEM_PACKAGES
    readme = " ".join(README.read_text().split())
    for package in installs:
        assert package in readme
    for step in ("pip install -e '.[test]'", "redis-server on 127.0.0.1:6379", "REDIS_URL", "`ruff check .`"):
        assert step in readme
    assert "`mypy --strict trio_asgi_ws`" in readme


def test_without_root_the_script_names_the_missing_packages_and_stops(tmp_path: Path) -> None:
    """As a user without root or sudo, on a machine with none of the packages: one message naming
    them and the command to install them, exit status 1, nothing installed or created."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "id").write_text("#!/bin/sh\necho 1000\n")  # not root, whoever runs the tests
    (bin_dir / "id").chmod(0o755)
    dirname = shutil.which("dirname")
    assert dirname is not None
    (bin_dir / "dirname").symlink_to(dirname)
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True, timeout=30
    )
    packages = " ".join(SYSTEM_PACKAGES)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"scripts/test: the tests need system packages that are not installed: {packages}",
        "scripts/test: install them, then run this again:",
        f"scripts/test:     sudo apt-get update && sudo apt-get install -y {packages}",
    ]


def test_the_routed_app_is_under_25_lines() -> None:
    routed = next(block for block in blocks("python") if "Router(" in block)
    app = routed.partition("async def test_")[0]
    assert len([line for line in app.splitlines() if line.strip()]) < 25


def test_the_readme_app_passes_the_readme_test() -> None:
    routed = next(block for block in blocks("python") if "Router(" in block)
    namespace: dict[str, Any] = {}
    exec(compile(routed, str(README), "exec"), namespace)
    trio.run(namespace["test_room"])
