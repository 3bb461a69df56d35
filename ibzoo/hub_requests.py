"""ibzoo's requests to a Hub: time limits on every one, and one reading of what went wrong.

huggingface_hub's HTTP client waits without limit unless a call passes a timeout, retries a timed-out
request with back-off, and restarts a download's retry count whenever a few bytes arrive, so a Hub that
stalls, trickles or keeps cutting a file short can hold a load or a push forever. Inside
:func:`time_limits` (every download and push ibzoo makes runs inside one) each request that
huggingface_hub sends through its shared client (``huggingface_hub.get_session()``) is bounded by two of
httpx's public event hooks, added to that client; the client itself, its proxies and certificates stay
whatever the user configured, and outside the block the hooks do nothing. The limits:

- **no answer**: connecting, sending, waiting for the response and each read of its body take at most
  ``IBZOO_HUB_TIMEOUT`` seconds (default 60; a shorter timeout huggingface_hub set itself is kept);
- **a trickle**: a body must keep arriving at :data:`MIN_BYTES_PER_S` or faster, measured over each
  period of that length;
- **retries**: once a request timed out, or after :data:`MAX_ATTEMPTS` tries of one URL (a body cut
  short every time), the operation stops instead of retrying.

A limit that is hit raises :class:`HubTimeoutError`, naming the server and the limit. Requests sent from
threads that huggingface_hub starts itself (parallel uploads of large files, ``snapshot_download``) do
not see the block and keep huggingface_hub's own behaviour; ibzoo's downloads and commits send none.

:func:`hub_failure` is the one classification of a failed Hub call (loading and publishing both word
their messages from it).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal
from urllib.parse import urlsplit

from huggingface_hub import constants, get_session
from huggingface_hub import errors as hf_errors

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "HUB_ERRORS",
    "MAX_ATTEMPTS",
    "MIN_BYTES_PER_S",
    "TIMEOUT_VARIABLE",
    "HubFailure",
    "HubTimeoutError",
    "hub_failure",
    "hub_timeout",
    "time_limits",
]

TIMEOUT_VARIABLE = "IBZOO_HUB_TIMEOUT"
DEFAULT_TIMEOUT_S = 60.0
MIN_BYTES_PER_S = 1024
MAX_ATTEMPTS = 3


class HubTimeoutError(TimeoutError):
    """A Hub that did not answer, or sent a body too slowly or cut short, within ibzoo's limits."""


# Everything a Hub call can raise for a reason outside the caller's code: huggingface_hub's errors (an
# error status, offline, not cached), ibzoo's limits, and the HTTP client's own errors for a refused
# connection or a broken body (httpx's in huggingface_hub 1.x, httpx2's in 2.x, exported under no public
# name; huggingface_hub's HfHubHTTPError subclasses that client's base error, so it is taken from there).
HUB_ERRORS: tuple[type[BaseException], ...] = (
    hf_errors.HfHubHTTPError,
    hf_errors.OfflineModeIsEnabled,
    hf_errors.LocalEntryNotFoundError,
    HubTimeoutError,
    hf_errors.HfHubHTTPError.__bases__[0],
)


def hub_timeout() -> float:
    """The limit in seconds: ``IBZOO_HUB_TIMEOUT`` if set (a positive number), else 60."""
    text = os.environ.get(TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"{TIMEOUT_VARIABLE}={text!r} must be a positive number of seconds (default "
            f"{DEFAULT_TIMEOUT_S:g}); set it to e.g. 300 for a slow connection, or unset it."
        )
    return seconds


@dataclasses.dataclass
class _Attempts:
    """The tries of one request (method and URL) in a :func:`time_limits` block."""

    failed: int = 0  # tries in a row that did not complete
    started: float = 0.0  # the last try's start (time.monotonic)
    answered: bool = True  # whether the last try got response headers
    timed_out: bool = False  # whether the last try's body timed out


@dataclasses.dataclass
class _Operation:
    """The limit and the tries of one :func:`time_limits` block."""

    timeout: float
    attempts: dict[tuple[str, str], _Attempts] = dataclasses.field(default_factory=dict)


_OPERATION: contextvars.ContextVar[_Operation | None] = contextvars.ContextVar(
    "ibzoo_hub_operation", default=None
)


@contextlib.contextmanager
def time_limits() -> Iterator[float]:
    """Bound every huggingface_hub request made in this block (see the module docstring); yields the
    limit in seconds."""
    operation = _Operation(hub_timeout())
    _install_hooks()
    token = _OPERATION.set(operation)
    try:
        yield operation.timeout
    finally:
        _OPERATION.reset(token)


def _limit_message(server: str, what: str, timeout: float) -> str:
    return (
        f"The Hub at {server} {what} (ibzoo's limits: {timeout:g} s without an answer, "
        f"{MIN_BYTES_PER_S} bytes/s at the least, {MAX_ATTEMPTS} tries of a file). Check the connection "
        f"and HF_ENDPOINT (now {constants.ENDPOINT}) and try again; on a slow link raise the limit with "
        f"{TIMEOUT_VARIABLE}=SECONDS."
    )


def _raise_limit(url: Any, what: str, timeout: float) -> None:
    parts = urlsplit(str(url))
    raise HubTimeoutError(_limit_message(f"{parts.scheme}://{parts.netloc}", what, timeout))


def _on_request(request: Any) -> None:
    """Refuse a retry the limits forbid; bound every phase of this request by the limit."""
    operation = _OPERATION.get()
    if operation is None:
        return
    timeout, now = operation.timeout, time.monotonic()
    attempts = operation.attempts.setdefault((request.method, str(request.url)), _Attempts())
    what = f"{request.method} {request.url.path}"
    if attempts.timed_out or (not attempts.answered and now - attempts.started >= timeout):
        _raise_limit(request.url, f"did not answer {what} within {timeout:g} s", timeout)
    if attempts.failed >= MAX_ATTEMPTS:
        _raise_limit(request.url, f"failed {what} {attempts.failed} times in a row", timeout)
    attempts.failed, attempts.started, attempts.answered = attempts.failed + 1, now, False
    limits = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        phase: timeout if limits.get(phase) is None else min(limits[phase], timeout)
        for phase in ("connect", "read", "write", "pool")
    }


def _on_response(response: Any) -> None:
    """Mark the request answered and guard its body."""
    operation = _OPERATION.get()
    if operation is None:
        return
    attempts = operation.attempts[(response.request.method, str(response.request.url))]
    attempts.answered = True
    response.stream = _guarded_stream_type(_http_module())(response, attempts, operation.timeout)


def _http_module() -> ModuleType:
    """The HTTP client library huggingface_hub uses (httpx for 1.x, httpx2 for 2.x)."""
    return sys.modules[type(get_session()).__module__.partition(".")[0]]


def _install_hooks() -> None:
    """Add the two hooks to huggingface_hub's shared client, once per client (a new factory, a new client)."""
    hooks = get_session().event_hooks
    if _on_request not in hooks["request"]:
        hooks["request"].append(_on_request)
    if _on_response not in hooks["response"]:
        hooks["response"].append(_on_response)


@functools.cache
def _guarded_stream_type(http: ModuleType) -> type:
    """A response body of ``http`` (httpx or httpx2) that enforces the trickle limit and records a read
    that timed out, so that the retry huggingface_hub makes next is refused."""

    class GuardedStream(http.SyncByteStream):
        def __init__(self, response: Any, attempts: _Attempts, timeout: float) -> None:
            self._stream, self._url = response.stream, response.request.url
            self._attempts, self._timeout = attempts, timeout

        def __iter__(self) -> Iterator[bytes]:
            window_start, window_bytes = time.monotonic(), 0
            try:
                for chunk in self._stream:
                    window_bytes += len(chunk)
                    elapsed = time.monotonic() - window_start
                    if elapsed >= self._timeout:
                        if window_bytes < MIN_BYTES_PER_S * elapsed:
                            what = f"sent {self._url.path} at {window_bytes / elapsed:.0f} bytes/s"
                            _raise_limit(self._url, what, self._timeout)
                        window_start, window_bytes = time.monotonic(), 0
                    yield chunk
            except http.TimeoutException:
                self._attempts.timed_out = True
                raise
            self._attempts.failed = 0  # the whole body arrived

        def close(self) -> None:
            self._stream.close()

    return GuardedStream


FailureKind = Literal[
    "cut_short", "offline", "timeout", "unreachable", "unauthorized", "not_found", "server_error", "refused"
]


@dataclasses.dataclass(frozen=True)
class HubFailure:
    """What went wrong in a Hub call: ``kind``, the HTTP ``status`` if one came back, and ``detail`` (the
    first line of the error, or for a timeout ibzoo's whole message)."""

    kind: FailureKind
    status: int | None
    detail: str


def hub_failure(error: BaseException) -> HubFailure:
    """Classify ``error`` from a Hub call, looking through the exceptions huggingface_hub chains (a failed
    request behind a cache miss, a timeout behind an "offline" fallback)."""
    chain, seen = [], error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    status = next(
        (s for e in chain if (s := getattr(getattr(e, "response", None), "status_code", None)) is not None),
        None,
    )
    detail = str(error).splitlines()[0] if str(error) else type(error).__name__
    http = _http_module()
    if limit := next((e for e in chain if isinstance(e, HubTimeoutError)), None):
        return HubFailure("timeout", status, str(limit))
    if any(isinstance(e, http.TimeoutException) for e in chain):
        limit = hub_timeout()
        return HubFailure(
            "timeout", status, _limit_message(constants.ENDPOINT, f"did not answer within {limit:g} s", limit)
        )
    if cut := next((e for e in chain if isinstance(e, http.RemoteProtocolError)), None):
        limit = hub_timeout()
        what = f"closed the connection before the whole answer arrived ({cut})"
        return HubFailure("cut_short", status, _limit_message(constants.ENDPOINT, what, limit))
    if status is None and constants.is_offline_mode():
        return HubFailure("offline", None, detail)
    if isinstance(error, (hf_errors.RepositoryNotFoundError, hf_errors.RevisionNotFoundError)):
        return HubFailure("not_found", status, detail)
    if status is None:
        return HubFailure("unreachable", None, detail)
    if status in (401, 403):
        return HubFailure("unauthorized", status, detail)
    if status >= 500:
        return HubFailure("server_error", status, detail)
    return HubFailure("refused", status, detail)
