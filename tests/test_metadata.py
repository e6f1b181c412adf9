"""The version is written once, the licence file matches the metadata, the changelog covers the version."""

from __future__ import annotations

import configparser
import re
from importlib.metadata import metadata, version
from pathlib import Path

import trio_asgi_ws

ROOT = Path(__file__).resolve().parents[1]


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def test_setup_cfg_reads_the_version_from_the_package_instead_of_repeating_it() -> None:
    assert setup_cfg()["metadata"]["version"] == "attr: trio_asgi_ws.__version__"


def test_the_installed_metadata_has_the_package_version() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", trio_asgi_ws.__version__)
    assert version("trio_asgi_ws") == trio_asgi_ws.__version__


def test_the_license_file_is_the_mit_licence_the_metadata_names() -> None:
    assert setup_cfg()["metadata"]["license"] == "MIT"
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 the trio_asgi_ws authors" in text
    assert metadata("trio_asgi_ws")["License"] == "MIT"


def test_the_changelog_has_a_section_for_the_current_version() -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), flags=re.MULTILINE)
    assert headings[0] == "Unreleased"
    assert trio_asgi_ws.__version__ in headings
