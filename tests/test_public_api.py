"""The public surface: what `trio_asgi_ws` exports, and that it is typed."""

from __future__ import annotations

import inspect
from pathlib import Path

import trio_asgi_ws
import trio_asgi_ws.datastructures
import trio_asgi_ws.websockets


def test_every_exported_name_exists_and_is_defined_in_a_submodule() -> None:
    for name in trio_asgi_ws.__all__:
        obj = getattr(trio_asgi_ws, name)
        assert obj.__module__.startswith("trio_asgi_ws."), name


def test_the_package_exports_the_websocket_api_and_data_structures() -> None:
    expected = set(trio_asgi_ws.websockets.__all__) | set(trio_asgi_ws.datastructures.__all__)
    assert set(trio_asgi_ws.__all__) == expected


def test_the_package_is_marked_typed() -> None:
    assert (Path(trio_asgi_ws.__file__).parent / "py.typed").is_file()


def test_public_methods_are_fully_annotated() -> None:
    for name in trio_asgi_ws.__all__:
        obj = getattr(trio_asgi_ws, name)
        if not inspect.isclass(obj):
            continue
        for attr, member in vars(obj).items():
            if attr.startswith("_") and attr not in ("__init__", "__call__"):
                continue
            if not inspect.isfunction(member):
                continue
            annotations = member.__annotations__
            parameters = [p for p in inspect.signature(member).parameters if p != "self"]
            assert "return" in annotations, f"{name}.{attr} lacks a return annotation"
            missing = [p for p in parameters if p not in annotations]
            assert not missing, f"{name}.{attr} lacks annotations for {missing}"
