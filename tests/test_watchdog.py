"""sdactivate.watchdog: interval parsing as libsystemd, keep-alives in threads and asyncio."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sdactivate import watchdog
from sdactivate.errors import WatchdogError
from sdactivate.testing import NotifyReceiver

ME = os.getpid()


@pytest.fixture
def rx() -> Iterator[NotifyReceiver]:
    with NotifyReceiver(thread=True) as receiver:
        yield receiver


def send_marker(rx: NotifyReceiver, key: str) -> None:
    """Send a ``key=1`` marker datagram from the calling thread (synchronously queued)."""
    address = b"\0" + rx.address[1:].encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"{key}=1".encode(), address)


def index_of(rx: NotifyReceiver, key: str) -> int:
    """The index of the first message carrying ``key``, once the receiver has recorded it."""
    rx.wait_for(key, timeout=5)
    return next(i for i, m in enumerate(rx.messages) if key in m)


def mark(rx: NotifyReceiver, key: str) -> int:
    """Send a marker datagram from this thread; return its index once recorded."""
    send_marker(rx, key)
    return index_of(rx, key)


def pings_between(rx: NotifyReceiver, start: int, end: int) -> int:
    return sum(1 for m in rx.messages[start:end] if m.has("WATCHDOG", "1"))


INTERVAL_TABLE = [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(ME)}, 0.5),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_PID": str(ME)}, None),
    ({"WATCHDOG_USEC": " +20", "WATCHDOG_PID": f"\t{ME}"}, 20e-6),
    ({"WATCHDOG_USEC": "0x10"}, 16e-6),
    ({"WATCHDOG_USEC": "010"}, 8e-6),
    ({"WATCHDOG_USEC": "0"}, WatchdogError),
    ({"WATCHDOG_USEC": ""}, WatchdogError),
    ({"WATCHDOG_USEC": "abc"}, WatchdogError),
    ({"WATCHDOG_USEC": "10 "}, WatchdogError),
    ({"WATCHDOG_USEC": "-1"}, WatchdogError),
    ({"WATCHDOG_USEC": "1e6"}, WatchdogError),
    ({"WATCHDOG_USEC": "08"}, WatchdogError),
    ({"WATCHDOG_USEC": str(2**64 - 1)}, WatchdogError),
    ({"WATCHDOG_USEC": str(2**64)}, WatchdogError),
    ({"WATCHDOG_USEC": "10", "WATCHDOG_PID": "abc"}, WatchdogError),
    ({"WATCHDOG_USEC": "10", "WATCHDOG_PID": "0"}, WatchdogError),
    ({"WATCHDOG_USEC": "10", "WATCHDOG_PID": ""}, WatchdogError),
    ({"WATCHDOG_USEC": "10", "WATCHDOG_PID": str(2**31)}, WatchdogError),
]
TABLE_IDS = [
    "unset",
    "no-pid",
    "our-pid",
    "other-pid",
    "pid-only",
    "c-whitespace-plus",
    "hex",
    "octal",
    "zero",
    "empty",
    "garbage",
    "trailing-space",
    "negative",
    "float",
    "bad-octal",
    "infinity",
    "overflow",
    "pid-garbage",
    "pid-zero",
    "pid-empty",
    "pid-overflow",
]


@pytest.mark.parametrize(("env", "expected"), INTERVAL_TABLE, ids=TABLE_IDS)
def test_interval_table(env: dict[str, str], expected: float | type[Exception] | None) -> None:
    """interval(): None when not for us, seconds when ours, WatchdogError when ours but bad."""
    if isinstance(expected, type):
        with pytest.raises(expected):
            watchdog.interval(environ=env, pid=ME)
    else:
        assert watchdog.interval(environ=env, pid=ME) == expected


def test_error_names_variable_and_value() -> None:
    """The error shows which variable is wrong and its value."""
    with pytest.raises(WatchdogError, match=r"WATCHDOG_USEC='soon'"):
        watchdog.interval(environ={"WATCHDOG_USEC": "soon"}, pid=ME)
    with pytest.raises(WatchdogError, match=r"WATCHDOG_PID='me'"):
        watchdog.interval(environ={"WATCHDOG_USEC": "1", "WATCHDOG_PID": "me"}, pid=ME)


@functools.cache
def _libsystemd() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("systemd")
    return ctypes.CDLL(name) if name else None


@pytest.mark.parametrize(("env", "expected"), INTERVAL_TABLE, ids=TABLE_IDS)
def test_interval_agrees_with_libsystemd(
    env: dict[str, str], expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conformance: sd_watchdog_enabled(3) from libsystemd gives the same verdict."""
    lib = _libsystemd()
    if lib is None:
        pytest.skip("libsystemd not installed")
    for key in ("WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(key, raising=False)
        if key in env:
            monkeypatch.setenv(key, env[key])
    usec = ctypes.c_uint64(0)
    ret = lib.sd_watchdog_enabled(0, ctypes.byref(usec))
    try:
        ours = watchdog.interval()
    except WatchdogError:
        assert ret < 0
    else:
        assert (ret, ours) == ((1, usec.value / 1e6) if ret > 0 else (0, None))


def test_keepalive_is_noop_when_not_under_systemd() -> None:
    """No WATCHDOG_USEC: start()/watch_loop() return inactive handles that stop cleanly."""
    with watchdog.start(environ={}) as handle:
        assert handle.interval is None and handle.period is None and not handle.active
    loop = asyncio.new_event_loop()
    try:
        assert not watchdog.watch_loop(loop, environ={}).active
    finally:
        loop.close()


def test_thread_keepalive_pings_at_half_interval(rx: NotifyReceiver) -> None:
    """start() pings WATCHDOG=1 every interval/2 (not faster), and not after stop()."""
    env = {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(ME), **rx.environ}
    began = time.monotonic()
    handle = watchdog.start(environ=env)
    try:
        assert handle.interval == 0.2 and handle.period == 0.1 and handle.active
        rx.wait_until(lambda: rx.count("WATCHDOG", "1") >= 6, timeout=10, what="6 pings")
        elapsed = time.monotonic() - began
    finally:
        handle.stop()
    assert not handle.active
    assert elapsed >= 5 * 0.1 * 0.9, f"6 pings in {elapsed:.3f}s: faster than interval/2"
    after_stop = mark(rx, "X_STOPPED")  # behind every ping sent before stop() returned
    end = mark(rx, "X_AFTER_STOP")
    assert pings_between(rx, after_stop, end) == 0
    assert all(m.pid == ME for m in rx.messages)


def test_unhealthy_service_is_not_kept_alive(rx: NotifyReceiver) -> None:
    """healthy() returning False (or raising) skips the pings, so systemd kills the service."""
    asked = threading.Event()
    calls = 0

    def healthy() -> bool:
        nonlocal calls
        calls += 1
        if calls >= 4:
            asked.set()
        if calls % 2:
            raise RuntimeError("health check crashed")
        return False

    start = mark(rx, "X_START")
    with watchdog.start(interval=0.05, healthy=healthy, environ=rx.environ) as handle:
        assert asked.wait(5)
    end = mark(rx, "X_END")
    assert pings_between(rx, start, end) == 0
    assert handle.pings == 0 and handle.skipped >= 4


def test_trigger_sends_watchdog_trigger(rx: NotifyReceiver) -> None:
    """trigger() sends WATCHDOG=trigger; without NOTIFY_SOCKET it returns False."""
    assert watchdog.trigger(environ=rx.environ) is True
    assert rx.wait_for("WATCHDOG", "trigger", timeout=5).pid == ME
    assert watchdog.trigger(environ={}) is False


def _run_blocked_loop_scenario(rx: NotifyReceiver, *, thread: bool) -> tuple[int, int, int]:
    """Run a loop with a keep-alive, block it, unblock it; return (before, during, after)."""
    result: dict[str, int] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if thread:
            handle = watchdog.watch_loop(loop, interval=0.1, environ=rx.environ)
        else:
            handle = watchdog.run_in_loop(interval=0.1, environ=rx.environ)
        try:
            await asyncio.to_thread(
                rx.wait_until, lambda: rx.count("WATCHDOG", "1") >= 3, timeout=10
            )
            result["before"] = rx.count("WATCHDOG", "1")
            # Markers are sent from the loop's own thread, so they bracket the blocked span.
            send_marker(rx, "X_BLOCKED")
            time.sleep(0.6)  # the stuck call under test: 12 ping periods with the loop blocked
            send_marker(rx, "X_UNBLOCKED")
            start = await asyncio.to_thread(index_of, rx, "X_BLOCKED")
            end = await asyncio.to_thread(index_of, rx, "X_UNBLOCKED")
            result["during"] = pings_between(rx, start, end)
            await asyncio.to_thread(rx.wait_for, "WATCHDOG", "1", since=end, timeout=10)  # resumes
            result["after"] = rx.count("WATCHDOG", "1", since=end)
        finally:
            handle.stop()

    asyncio.run(main())
    return result["before"], result["during"], result["after"]


def test_asyncio_task_keepalive_stops_while_loop_is_blocked(rx: NotifyReceiver) -> None:
    """run_in_loop(): no ping while the event loop is stuck; pings resume when it runs."""
    before, during, after = _run_blocked_loop_scenario(rx, thread=False)
    assert before >= 3 and during == 0 and after >= 1


def test_loop_watcher_thread_stops_while_loop_is_blocked(rx: NotifyReceiver) -> None:
    """watch_loop(): the thread stops pinging within one period of the loop getting stuck."""
    before, during, after = _run_blocked_loop_scenario(rx, thread=True)
    assert before >= 3 and during <= 1 and after >= 1


def test_loop_watcher_stops_when_loop_closes(rx: NotifyReceiver) -> None:
    """watch_loop(): once its loop is closed the thread ends by itself (no pings forever)."""
    loop = asyncio.new_event_loop()
    handle = watchdog.watch_loop(loop, interval=0.05, environ=rx.environ)
    loop.close()
    handle._thread.join(5)  # type: ignore[attr-defined]
    assert not handle.active


def test_run_in_loop_from_another_thread(rx: NotifyReceiver) -> None:
    """run_in_loop(loop=...) from a foreign thread starts the task in that loop; stop() ends it."""
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        handle = watchdog.run_in_loop(interval=0.1, environ=rx.environ, loop=loop)
        rx.wait_until(lambda: rx.count("WATCHDOG", "1") >= 2, timeout=10)
        handle.stop()
        done = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
        done.result(5)
        task = handle.task  # type: ignore[attr-defined]
        asyncio.run_coroutine_threadsafe(asyncio.wait([task], timeout=5), loop).result(10)
        assert task.cancelled() or task.done()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(5)
        loop.close()


_USEC_TEXT = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2**65).map(str),
    st.text(alphabet=" \t+-0123456789xXabfoOABF", max_size=22),
)
_PID_TEXT = st.one_of(
    st.none(),
    st.sampled_from([str(ME), f" {ME}", f"+{ME}", hex(ME), oct(ME).replace("o", ""), "1", "0"]),
    st.text(alphabet=" +-0123456789x", max_size=12),
)


@settings(max_examples=200, deadline=None)
@given(usec=_USEC_TEXT, wpid=_PID_TEXT)
@example(usec="0B1", wpid=None)  # systemd's own 0b/0o prefixes (parse-util.c mangle_base)
@example(usec="0o17", wpid=None)
@example(usec="-0", wpid=None)
@example(usec="1", wpid="0b0")
def test_interval_property_agrees_with_libsystemd(usec: str | None, wpid: str | None) -> None:
    """For arbitrary WATCHDOG_USEC/WATCHDOG_PID text, our verdict is sd_watchdog_enabled's."""
    lib = _libsystemd()
    if lib is None:
        pytest.skip("libsystemd not installed")
    env = {"WATCHDOG_USEC": usec, "WATCHDOG_PID": wpid}
    saved = {key: os.environ.get(key) for key in env}
    try:
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        out = ctypes.c_uint64(0)
        ret = lib.sd_watchdog_enabled(0, ctypes.byref(out))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        ours = watchdog.parse_interval(usec, wpid, ME)
    except WatchdogError:
        assert ret < 0
    else:
        # int / int is correctly rounded; int / 1e6 would round the int to a float first
        assert (ret, ours) == ((1, out.value / 1_000_000) if ret > 0 else (0, None))
