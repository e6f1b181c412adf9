"""Structured WebSockets inside other ASGI frameworks, one small module per framework.

- ``trio_asgi_ws.integrations.starlette``: ``WebSocketRoute``, a Starlette route whose endpoint
  gets this library's ``WebSocket`` (install the ``starlette`` extra);
- ``trio_asgi_ws.integrations.fastapi``: ``structured``, a decorator for FastAPI WebSocket
  endpoints that keeps FastAPI's parameter injection (install the ``fastapi`` extra).

Nothing is imported here, so importing ``trio_asgi_ws`` (or this package) never imports a
framework: only importing one of the modules above does.  See docs/frameworks.md.
"""
