"""The service's log lines: time, level, logger, and the request / flow run they concern; JSON on demand."""

import io
import json
import logging
import logging.config

import pytest

from emgapi.log_format import logging_config, request_context


@pytest.fixture
def capture():
    """The project's logging config, its console handler writing to a buffer, on a logger of the test's own."""
    name = "workflows.test_log_format"

    def configure(log_format: str) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        config = logging_config(log_format, level="INFO", httpx_level="WARNING")
        config["handlers"]["console"]["stream"] = stream
        config["root"] = {"level": "WARNING"}  # leave the root logger (pytest's capture) as it is
        config["loggers"] = {name: {"handlers": ["console"], "level": "INFO", "propagate": False}}
        logging.config.dictConfig(config)
        return logging.getLogger(name), stream

    yield configure
    from django.conf import settings

    logging.getLogger(name).handlers.clear()
    logging.config.dictConfig(settings.LOGGING)


def test_a_text_line_names_its_request_inside_a_pass(capture):
    logger, stream = capture("text")
    logger.info("outside")
    with request_context(42):
        logger.warning("Adopting Slurm job %s", "17")
    outside, inside = stream.getvalue().splitlines()
    assert outside.endswith(" INFO    workflows.test_log_format: outside")
    assert inside.endswith(" WARNING workflows.test_log_format [request=42]: Adopting Slurm job 17")
    assert inside[:4].isdigit()  # the time comes first


def test_json_lines_carry_the_same_fields(capture):
    logger, stream = capture("json")
    with request_context(7):
        logger.error("boom", extra={"flow_run_id": "5b0c"})
    entry = json.loads(stream.getvalue())
    assert entry["level"] == "ERROR" and entry["logger"] == "workflows.test_log_format"
    assert entry["message"] == "boom" and entry["request_id"] == 7 and entry["flow_run_id"] == "5b0c"
    assert entry["time"].endswith("+00:00")


def test_an_unknown_log_format_is_refused():
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        logging_config("xml", level="INFO", httpx_level="WARNING")


def test_httpx_says_nothing_at_info():
    from django.conf import settings

    assert settings.LOGGING["loggers"]["httpx"]["level"] == "WARNING"


def test_runservers_request_lines_take_the_services_format():
    # Django gives `django.server` a handler and format of its own ("[04/Dec/2026 12:43:47] "POST …" 201 523");
    # configured after Django's defaults, as Django applies LOGGING, the project's console handler replaces it.
    from django.utils.log import DEFAULT_LOGGING

    stream = io.StringIO()
    config = logging_config("text", level="INFO", httpx_level="WARNING")
    config["handlers"]["console"]["stream"] = stream
    config["root"] = {"level": "WARNING"}
    try:
        logging.config.dictConfig(DEFAULT_LOGGING)
        logging.config.dictConfig(config)
        logging.getLogger("django.server").info('"POST /api/ HTTP/1.1" 201 523')
    finally:
        from django.conf import settings

        logging.config.dictConfig(settings.LOGGING)
    [line] = stream.getvalue().splitlines()
    assert line[:4].isdigit() and line.endswith(' INFO    django.server: "POST /api/ HTTP/1.1" 201 523')
