"""Helpers for a Trellis handler over the componentize-py bindings.

`serve(handle)` turns a function of a `Request` returning a `Response` into
the `wasi:http/incoming-handler` export; `sql`, `log`, `config` and `cache`
wrap the `trellis:api` imports the world takes (see wit/world.wit). Each
import is loaded on first use, so a world without `sql` builds as long as
the handler never calls it. The raw bindings stay in `wit_world.imports`.
`trellis wit` rewrites this file with the world: keep your code elsewhere.
"""

import json as _json
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from componentize_py_types import Err, Ok
from wit_world.imports import types as _http

# One blocking write may carry at most this many bytes (wasi:io/streams).
_CHUNK = 4096


@dataclass
class Request:
    """One incoming request, its body read whole."""

    method: str
    path: str
    query: str
    headers: List[Tuple[str, bytes]]
    body: bytes

    def header(self, name: str) -> Optional[str]:
        """The first value of header `name` (case-insensitive), as text."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return _json.loads(self.body)


@dataclass
class Response:
    """What the handler answers."""

    status: int = 200
    body: bytes = b""
    headers: List[Tuple[str, bytes]] = field(default_factory=list)

    @staticmethod
    def text(text: str, status: int = 200) -> "Response":
        return Response(status, text.encode(), [("content-type", b"text/plain; charset=utf-8")])

    @staticmethod
    def json(value: Any, status: int = 200) -> "Response":
        body = _json.dumps(value).encode()
        return Response(status, body, [("content-type", b"application/json")])


def serve(handle: Callable[[Request], Response]) -> type:
    """The `IncomingHandler` class componentize-py exports, calling `handle`.

    An exception becomes a 500 with the contract's JSON error; its traceback
    goes to stderr, which the host logs.
    """

    class IncomingHandler:
        def handle(self, request: Any, response_out: Any) -> None:
            try:
                response = handle(_read(request))
            except Exception:  # noqa: BLE001 - every failure must answer
                traceback.print_exc()
                response = Response.json({"error": "internal error"}, status=500)
            _write(response, response_out)

    return IncomingHandler


def _method(method: Any) -> str:
    if isinstance(method, _http.Method_Other):
        return method.value
    return type(method).__name__.removeprefix("Method_").upper()


def _read(request: Any) -> Request:
    target = request.path_with_query() or "/"
    path, _, query = target.partition("?")
    headers = request.headers().entries()
    body = bytearray()
    incoming = request.consume()
    stream = incoming.stream()
    while True:
        try:
            chunk = stream.blocking_read(64 * 1024)
        except Err:
            break  # closed: the body is complete
        body.extend(chunk)
    stream.__exit__(None, None, None)
    _http.IncomingBody.finish(incoming)
    method = _method(request.method())
    # Handles are released as soon as they are read, the request's too: an
    # instance that still holds one after its request is not reused.
    request.__exit__(None, None, None)
    return Request(method, path, query, headers, bytes(body))


def _write(response: Response, response_out: Any) -> None:
    headers = list(response.headers)
    headers.append(("content-length", str(len(response.body)).encode()))
    outgoing = _http.OutgoingResponse(_http.Fields.from_list(headers))
    outgoing.set_status_code(response.status)
    body = outgoing.body()
    _http.ResponseOutparam.set(response_out, Ok(outgoing))
    stream = body.write()
    data = response.body
    for start in range(0, len(data), _CHUNK):
        stream.blocking_write_and_flush(data[start : start + _CHUNK])
    stream.__exit__(None, None, None)
    _http.OutgoingBody.finish(body, None)


class sql:
    """`trellis:api/sql`: parameterized SQL on the host's pool ($1, $2, ...)."""

    @staticmethod
    def _raw() -> Any:
        from wit_world.imports import sql as raw

        return raw

    @staticmethod
    def _value(value: Any) -> Any:
        raw = sql._raw()
        if value is None:
            return raw.Value_Null()
        if isinstance(value, bool):
            return raw.Value_Boolean(value)
        if isinstance(value, int):
            return raw.Value_Int(value)
        if isinstance(value, float):
            return raw.Value_Float(value)
        if isinstance(value, (bytes, bytearray)):
            return raw.Value_Blob(bytes(value))
        return raw.Value_Text(str(value))

    @staticmethod
    def query(statement: str, *params: Any) -> List[Dict[str, Any]]:
        """The rows of `statement`, each a dict of column name to value.

        A failed statement raises `componentize_py_types.Err` carrying the
        WIT `error` (e.g. `Error_Conflict` for a unique violation).
        """
        rows = sql._raw().query(statement, [sql._value(p) for p in params])
        return [
            {name: getattr(value, "value", None) for name, value in zip(rows.columns, row)}
            for row in rows.rows
        ]

    @staticmethod
    def execute(statement: str, *params: Any) -> int:
        """Runs `statement`; the number of rows affected."""
        return sql._raw().execute(statement, [sql._value(p) for p in params])


class log:
    """`trellis:api/log`: structured records in the host's log, tagged with
    the route and the request id."""

    @staticmethod
    def _write(level: str, message: str, fields: Dict[str, Any]) -> None:
        from wit_world.imports import log as raw

        pairs = [(key, str(value)) for key, value in fields.items()]
        raw.write(getattr(raw.Level, level), message, pairs)

    @staticmethod
    def debug(message: str, **fields: Any) -> None:
        log._write("DEBUG", message, fields)

    @staticmethod
    def info(message: str, **fields: Any) -> None:
        log._write("INFO", message, fields)

    @staticmethod
    def warn(message: str, **fields: Any) -> None:
        log._write("WARN", message, fields)

    @staticmethod
    def error(message: str, **fields: Any) -> None:
        log._write("ERROR", message, fields)


class config:
    """`trellis:api/config`: the route's variables and secrets."""

    @staticmethod
    def get(key: str) -> Optional[str]:
        from wit_world.imports import config as raw

        return raw.get(key)


class cache:
    """`trellis:api/cache`: the host's tiered cache, in the route's namespace."""

    @staticmethod
    def get(key: str) -> Optional[bytes]:
        from wit_world.imports import cache as raw

        return raw.get(key)

    @staticmethod
    def set(key: str, value: bytes, ttl_ms: int) -> None:
        from wit_world.imports import cache as raw

        raw.set(key, value, ttl_ms)

    @staticmethod
    def delete(key: str) -> bool:
        from wit_world.imports import cache as raw

        return raw.delete(key)


class metrics:
    """`trellis:api/metrics`: counters and histograms on the host's /metrics."""

    @staticmethod
    def count(name: str, value: int = 1, **labels: str) -> None:
        from wit_world.imports import metrics as raw

        raw.counter_add(name, value, list(labels.items()))

    @staticmethod
    def observe(name: str, value: float, **labels: str) -> None:
        from wit_world.imports import metrics as raw

        raw.histogram_observe(name, value, list(labels.items()))


class rate_limit:
    """`trellis:api/rate-limit`: the manifest's named policies."""

    @staticmethod
    def check(policy: str, key: str) -> Any:
        """The decision (`allowed`, `remaining`, `retry_after_ms`, ...)."""
        from wit_world.imports import rate_limit as raw

        return raw.check(policy, key)
