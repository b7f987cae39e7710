"""swarmd.logs: JSON lines, contextvars, trace ids, live level changes."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider
from structlog.testing import capture_logs

from swarmd.telemetry.logs import configure_logging, debug_enabled, get_logger, job_context, set_level


@pytest.fixture(autouse=True)
def _isolate() -> Iterator[None]:
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()
    set_level("info")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_carry_the_job_being_run_and_its_own_keys_win() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    log = get_logger()

    async def run(ids: tuple[str, str, str]) -> None:
        job_context.set(SimpleNamespace(id=ids[0], gid=ids[1], agent=ids[2]))
        await asyncio.sleep(0)  # the other job's task runs in between: contexts stay apart
        log.info("working")
        log.info("refused", job_id="other")

    async def both() -> None:
        await asyncio.gather(run(("j-1", "g-1", "echo")), run(("j-2", "g-2", "sleep")))

    asyncio.run(both())
    log.info("outside")
    rows = lines(out)
    working = sorted((r["job_id"], r["gid"], r["agent"]) for r in rows if r["event"] == "working")
    assert working == [("j-1", "g-1", "echo"), ("j-2", "g-2", "sleep")]
    assert [r["job_id"] for r in rows if r["event"] == "refused"] == ["other", "other"]
    assert [r["gid"] for r in rows if r["event"] == "refused"] in (["g-1", "g-2"], ["g-2", "g-1"])
    [outside] = [r for r in rows if r["event"] == "outside"]
    assert "job_id" not in outside and "gid" not in outside


def test_json_lines_carry_contextvars_level_and_utc_timestamp() -> None:
    out = io.StringIO()  # not a TTY: JSON by default
    configure_logging("info", stream=out)
    log = get_logger(component="daemon")
    structlog.contextvars.bind_contextvars(job_id="j-1", gid="g-9", agent="echo")
    log.info("job started", attempt=1)
    structlog.contextvars.clear_contextvars()
    log.warning("idle")
    first, second = lines(out)
    assert first["event"] == "job started"
    assert first["level"] == "info"
    assert (first["job_id"], first["gid"], first["agent"]) == ("j-1", "g-9", "echo")
    assert (first["component"], first["attempt"]) == ("daemon", 1)
    stamp = datetime.fromisoformat(str(first["timestamp"]))
    assert stamp.utcoffset() == timedelta(0)
    assert "job_id" not in second and second["level"] == "warning"
    assert "trace_id" not in first  # no span, no ids


def test_unserializable_values_do_not_break_a_line() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out, json=True)
    get_logger().info("odd", value={1, 2}, obj=object())
    [line] = lines(out)
    assert line["event"] == "odd"
    assert str(line["obj"]).startswith("<object object")


def test_exceptions_are_structured_in_json() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out, json=True)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger().exception("failed")
    [line] = lines(out)
    assert line["level"] == "error"
    frames = line["exception"]
    assert isinstance(frames, list) and len(frames) == 1
    frame = frames[0]
    assert frame["exc_type"] == "ValueError" and frame["exc_value"] == "boom"


def test_trace_and_span_ids_of_the_current_span() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("process default") as span:
        get_logger().info("inside")
    get_logger().info("outside")
    inside, outside = lines(out)
    ctx = span.get_span_context()
    assert inside["trace_id"] == f"{ctx.trace_id:032x}"
    assert inside["span_id"] == f"{ctx.span_id:016x}"
    assert "trace_id" not in outside and "span_id" not in outside


def test_set_level_changes_filtering_of_existing_loggers() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)
    lazy = get_logger()
    lazy.info("cache me")  # the proxy caches its bound logger on first use
    bound = get_logger().bind(component="x")  # a concrete logger made before the change
    lazy.debug("hidden 1")
    bound.debug("hidden 2")
    set_level("debug")
    lazy.debug("shown 1")
    bound.debug("shown 2")
    set_level("error")
    lazy.warning("hidden 3")
    bound.error("shown 3")
    assert [line["event"] for line in lines(out)] == ["cache me", "shown 1", "shown 2", "shown 3"]
    assert bound.is_enabled_for(40) and not bound.is_enabled_for(30)


@pytest.mark.parametrize(("level", "expected"), [("debug", True), ("DEBUG", True), ("info", False), ("error", False)])
def test_debug_enabled_follows_the_level(level: str, expected: bool) -> None:
    configure_logging(level, stream=io.StringIO())
    assert debug_enabled() is expected
    set_level("info" if expected else "debug")  # and a live change (SIGHUP)
    assert debug_enabled() is not expected


def test_capture_logs_sees_cached_loggers() -> None:
    configure_logging("debug", stream=io.StringIO())
    log = get_logger(component="c")
    log.info("warm")
    with capture_logs() as captured:
        structlog.contextvars.bind_contextvars(job_id="j-3")
        log.debug("captured", n=1)
    assert captured == [{"component": "c", "n": 1, "event": "captured", "log_level": "debug"}]


def test_reconfigure_moves_existing_loggers_to_the_new_stream() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", stream=first)
    log = get_logger()
    log.info("one")
    configure_logging("info", stream=second)
    log.info("two")
    assert [line["event"] for line in lines(first)] == ["one"]
    assert [line["event"] for line in lines(second)] == ["two"]


def test_console_renderer_when_json_is_false() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out, json=False)
    structlog.contextvars.bind_contextvars(job_id="j-5")
    get_logger().info("hello console")
    text = out.getvalue()
    assert "hello console" in text and "job_id" in text and "j-5" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


@pytest.mark.parametrize("level", ["verbose", "", "INFOO", "10"])
def test_invalid_level_is_refused_naming_the_value(level: str) -> None:
    out = io.StringIO()
    configure_logging("warning", stream=out)
    with pytest.raises(ValueError, match=f"invalid log level {level!r}"):
        set_level(level)
    with pytest.raises(ValueError, match=f"invalid log level {level!r}"):
        configure_logging(level, stream=io.StringIO())
    get_logger().info("still filtered")
    get_logger().warning("still shown")
    assert [line["event"] for line in lines(out)] == ["still shown"]


@pytest.mark.parametrize("level", ["DEBUG", "Info", "warn", "critical"])
def test_level_names_are_case_insensitive(level: str) -> None:
    configure_logging(level, stream=io.StringIO())
