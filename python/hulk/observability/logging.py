"""Structured logs: one JSON object a line on stdout (or coloured console lines on a terminal).

Every line carries `timestamp` (ISO 8601, UTC), `level`, `logger`, `event`, the context bound with
`structlog.contextvars`, and `trace_id` / `span_id` when an OpenTelemetry span is current. Records of
the standard library's `logging` (uvicorn, nats, asyncio, opentelemetry) go through the same
processors into the same output.

Cheap by design: a call below the level is a method that returns None (the methods come from
structlog's `make_filtering_bound_logger`), so nothing is built, bound or formatted; stdlib records
below the level are dropped by `Logger.isEnabledFor` before a `LogRecord` exists. `set_level` swaps
those methods on the one logger class every logger is an instance of, so it applies at once to
loggers already created and cached, without reconfiguring anything else.

Example:
    >>> from hulk.observability.logging import configure_logging, get_logger, set_level
    >>> configure_logging(level="info", fmt="json")  # doctest: +SKIP
    >>> get_logger("hulk.engine").info("pool.started", workers=8)  # doctest: +SKIP
    >>> set_level("debug")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Callable, MutableMapping
from datetime import UTC, datetime
from typing import IO, Any, Literal, cast

import orjson
import structlog
from opentelemetry import trace
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "LEVELS",
    "LogFormat",
    "add_trace_ids",
    "configure_logging",
    "get_level",
    "get_logger",
    "reset_logging",
    "set_level",
]

LogFormat = Literal["json", "console", "auto"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_NAMES = {number: name for name, number in LEVELS.items()}
_ALIASES = {"warn": "warning", "fatal": "critical"}

# Loggers that libraries configure with their own handlers; their records are routed to ours instead.
_ROUTED_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


class _Output:
    """Where rendered lines go. One shared instance, so cached loggers follow a reconfiguration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._write: Callable[[bytes], object] = sys.stdout.buffer.write
        self._flush: Callable[[], object] = sys.stdout.flush

    def target(self, stream: IO[bytes] | IO[str]) -> None:
        """Sends lines to `stream` (binary, or text: then the bytes are decoded)."""
        if isinstance(stream, io.TextIOBase):
            buffer = getattr(stream, "buffer", None)
            if buffer is not None:
                stream.flush()
                self._write, self._flush = buffer.write, buffer.flush
            else:
                text = cast(IO[str], stream)
                self._write, self._flush = (lambda line: text.write(line.decode("utf-8"))), text.flush
        else:
            binary = cast(IO[bytes], stream)
            self._write, self._flush = binary.write, binary.flush

    def line(self, rendered: str | bytes) -> None:
        """Writes one rendered event and a newline, then flushes (a crash loses no finished line)."""
        data = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
        with self._lock:
            self._write(data + b"\n")
            self._flush()


_OUTPUT = _Output()
_PROCESSORS: list[Processor] = []  # mutated in place: bound loggers keep a reference to this very list
_STATE = {"level": logging.INFO}


class LineLogger:
    """structlog's final logger: writes the rendered line; carries the logger's name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def msg(self, message: str | bytes) -> None:
        """Writes one rendered line."""
        _OUTPUT.line(message)

    debug = info = warning = warn = error = err = critical = fatal = exception = failure = log = msg


def _logger_factory(*args: Any) -> LineLogger:
    return LineLogger(args[0] if args and isinstance(args[0], str) else "hulk")


class HulkLogger(structlog.BoundLoggerBase):
    """The bound logger class of hulk; its level methods are swapped by `set_level`.

    Instances have the interface of structlog's `FilteringBoundLogger` (`debug`, `info`, `ainfo`,
    `exception`, `log`, `bind`, ...).
    """


def _install_level(level: int) -> None:
    source = structlog.make_filtering_bound_logger(level)
    for name, attr in vars(source).items():
        if not name.startswith("__"):
            setattr(HulkLogger, name, attr)
    _STATE["level"] = level


_install_level(logging.INFO)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _add_timestamp(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    if "timestamp" not in event_dict:
        event_dict["timestamp"] = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return event_dict


def _add_logger_name(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    if "logger" not in event_dict:
        event_dict["logger"] = getattr(logger, "name", "hulk")
    return event_dict


def add_trace_ids(logger: WrappedLogger, method: str, event_dict: EventDict) -> EventDict:
    """Processor adding `trace_id` (32 hex) and `span_id` (16 hex) of the current span, if any."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


_FIRST_KEYS = ("timestamp", "level", "logger", "event")


def _json_fallback(obj: Any) -> Any:
    return repr(obj)


def _render_json(logger: WrappedLogger, method: str, event_dict: EventDict) -> bytes:
    ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
    ordered.update(event_dict)
    return orjson.dumps(ordered, default=_json_fallback, option=orjson.OPT_NON_STR_KEYS)


def _processors(fmt: Literal["json", "console"], colors: bool) -> list[Processor]:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        _add_timestamp,
        add_trace_ids,
        structlog.processors.StackInfoRenderer(),
    ]
    if fmt == "json":
        return [*shared, structlog.processors.format_exc_info, _render_json]
    return [*shared, structlog.dev.ConsoleRenderer(colors=colors)]


class _StdlibBridge(logging.Handler):
    """Sends standard-library records through hulk's processors to the same output."""

    def emit(self, record: logging.LogRecord) -> None:
        """Renders and writes one record."""
        try:
            event_dict: MutableMapping[str, Any] = {
                "event": record.getMessage(),
                "logger": record.name,
                "timestamp": _iso(record.created),
            }
            if record.exc_info:
                event_dict["exc_info"] = record.exc_info
            method = record.levelname.lower()
            rendered: Any = event_dict
            for processor in _PROCESSORS:
                rendered = processor(None, method, rendered)
            _OUTPUT.line(rendered)
        except structlog.DropEvent:
            return
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


_BRIDGE = _StdlibBridge()


def _level_number(level: str | int) -> int:
    if isinstance(level, bool):
        raise ValueError(f"level: expected one of {', '.join(LEVELS)}, got {level!r}")
    if isinstance(level, int):
        if level not in _NAMES:
            raise ValueError(f"level: expected one of {sorted(_NAMES)}, got {level!r}")
        return level
    name = level.strip().lower()
    number = LEVELS.get(_ALIASES.get(name, name))
    if number is None:
        raise ValueError(f"level: expected one of {', '.join(LEVELS)}, got {level!r}")
    return number


def set_level(level: str | int) -> None:
    """Changes the level of every logger now, hulk's and the standard library's.

    Args:
        level: "debug", "info", "warning" (or "warn"), "error", "critical", or the `logging` constant.

    Raises:
        ValueError: an unknown level; the message names it.
    """
    number = _level_number(level)
    _install_level(number)
    logging.getLogger().setLevel(number)
    _BRIDGE.setLevel(number)  # for libraries that set a lower level on their own logger


def get_level() -> str:
    """The current level's name ("info", ...)."""
    return _NAMES[_STATE["level"]]


def configure_logging(
    *,
    level: str | int = "info",
    fmt: LogFormat = "auto",
    stream: IO[bytes] | IO[str] | None = None,
) -> None:
    """Configures structlog and the standard library's root logger; safe to call again.

    Args:
        level: the minimum level (see `set_level`); from `settings.logging.level`.
        fmt: "json" (one JSON object a line), "console" (coloured key=value lines for people), or
            "auto": console when the stream is a terminal, JSON otherwise. From `settings.logging.format`.
        stream: where lines go; default `sys.stdout`.

    Raises:
        ValueError: an unknown level or format.
    """
    if fmt not in ("json", "console", "auto"):
        raise ValueError(f"fmt: expected 'json', 'console' or 'auto', got {fmt!r}")
    target: IO[bytes] | IO[str] = stream if stream is not None else sys.stdout
    is_tty = bool(getattr(target, "isatty", lambda: False)())
    resolved: Literal["json", "console"] = ("console" if is_tty else "json") if fmt == "auto" else fmt
    number = _level_number(level)

    _OUTPUT.target(target)
    _PROCESSORS[:] = _processors(resolved, colors=is_tty)
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=HulkLogger,
        logger_factory=_logger_factory,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler:  # basicConfig's; subclasses (test capture) stay
            root.removeHandler(handler)
    root.addHandler(_BRIDGE)
    for name in _ROUTED_LOGGERS:
        routed = logging.getLogger(name)
        routed.handlers.clear()
        routed.propagate = True
    set_level(number)


def reset_logging() -> None:
    """Undoes `configure_logging`: structlog's defaults, our handler removed (for tests and embedding)."""
    logging.getLogger().removeHandler(_BRIDGE)
    structlog.reset_defaults()
    _OUTPUT.target(sys.stdout)
    _install_level(logging.INFO)


def get_logger(name: str) -> FilteringBoundLogger:
    """A structlog logger named `name` (shown as `logger` in each line); cheap to keep at module level."""
    return cast(FilteringBoundLogger, structlog.get_logger(name))
