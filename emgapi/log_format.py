"""One log format for every process of the service: time, level, logger, and inside a flow run the request and
flow run it concerns, as text for people (the default) or one JSON object a line (`LOG_FORMAT=json`)."""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

_request_id: ContextVar[int | None] = ContextVar("emgapi_request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s%(context)s: %(message)s"


@contextmanager
def request_context(request_id: int) -> Iterator[None]:
    """Every line logged inside names this request (a flow pass, a cancellation)."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def _current_flow_run_id() -> str | None:
    try:
        from prefect.context import FlowRunContext
    except ImportError:  # a process without Prefect (a management command) logs without it
        return None
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context is not None and context.flow_run is not None else None


class ContextFilter(logging.Filter):
    """Adds `request_id`, `flow_run_id` and, for the text format, `context` (" [request=5 flow_run=…]")."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or _request_id.get()
        flow_run_id = getattr(record, "flow_run_id", None) or _current_flow_run_id()
        record.request_id = request_id
        record.flow_run_id = flow_run_id
        parts = [f"request={request_id}"] if request_id is not None else []
        parts += [f"flow_run={flow_run_id}"] if flow_run_id else []
        record.context = f" [{' '.join(parts)}]" if parts else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in ("request_id", "flow_run_id"):
            if getattr(record, field, None) is not None:
                entry[field] = getattr(record, field)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(log_format: str, level: str, httpx_level: str) -> dict[str, Any]:
    if log_format not in {"text", "json"}:
        raise ValueError(f"LOG_FORMAT must be 'text' or 'json', not {log_format!r}")
    formatter = {"()": JsonFormatter} if log_format == "json" else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "default", "filters": ["context"]}
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # One INFO line per HTTP call (every Prefect API call of the poller and the flows) would bury what
            # the service says.
            "httpx": {"level": httpx_level},
            "httpcore": {"level": "WARNING"},
            # runserver's request lines: Django gives them a handler and format of their own; ours instead.
            "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        },
    }
