"""An httpx transport that caps reply bodies before anything parses them.

The openai client reads a whole body and decodes it as JSON; a hostile or broken server can
send megabytes, or a body nested 200,000 levels deep. This transport reads the body itself and
stops at ``max_bytes`` (the ``Content-Length`` is checked first), so an oversized reply costs at
most that much memory and becomes ``ReplyTooLarge``, which the client counts as an invalid
reply. (A body trickling one byte a second is cut by the client's total deadline.)
"""

from __future__ import annotations

import importlib
from typing import Any


class ReplyTooLarge(Exception):
    """The server's reply body exceeded the cap."""


def http_module(openai: Any) -> Any:
    """The httpx-compatible package this openai release is built on (``httpx``, or ``httpx2``
    in recent releases): the one its default client class derives from."""
    for cls in openai.DefaultAsyncHttpxClient.__mro__:
        if cls.__name__ == "AsyncClient":
            return importlib.import_module(cls.__module__.split(".")[0])
    raise ImportError("cannot find the HTTP client package of the installed openai")


def capped_transport(openai: Any, max_bytes: int) -> Any:
    """An ``AsyncHTTPTransport`` that refuses reply bodies over ``max_bytes``."""
    httpx = http_module(openai)

    class CappedTransport(httpx.AsyncHTTPTransport):
        async def handle_async_request(self, request: Any) -> Any:
            response = await super().handle_async_request(request)
            try:
                body = await _read_capped(response, max_bytes)
            finally:
                await response.aclose()
            return httpx.Response(response.status_code, headers=response.headers, content=body,
                                  extensions=response.extensions, request=request)

    return CappedTransport()


async def _read_capped(response: Any, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ReplyTooLarge(f"reply of {int(declared)} bytes (cap {max_bytes})")
    body = bytearray()
    async for chunk in response.stream:
        body += chunk
        if len(body) > max_bytes:
            raise ReplyTooLarge(f"reply over {max_bytes} bytes")
    return bytes(body)
