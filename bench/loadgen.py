"""Open-loop HTTP/1.1 load generator for loopback restart benchmarks.

Every request has an id and a scheduled send time on a fixed-rate schedule
(``t0 + id / rate``).  Latency is measured from the *scheduled* time, not from
when the generator got round to sending, so a stalled server (or a stalled
generator) shows up as latency instead of silently thinning the load
(no coordinated omission).

Default workload: a new TCP connection per request,
``GET / HTTP/1.1`` with ``Connection: close``; the response is read to
Content-Length (or EOF) and the status line parsed.  ``keepalive=True`` reuses
a small pool of persistent connections instead (a request waits for an idle
connection when all are busy; that wait counts as latency).

Two engines run the same schedule into the same Result: ``epoll_client.py`` (a plain epoll
loop, the default for a new connection per request: ~80 us of interpreter time per request
where asyncio needs ~270 us on the measurement VM) and ``run_async`` (asyncio; keep-alive,
and callers that bring their own loop). ``engine="asyncio"`` forces the latter. Both fill a
``loadresult.Result`` and speak the bytes of ``loadwire.py``; this module re-exports the
result names (``loadgen.Result``, ``loadgen.window_stats``...).

Everything is bounded: at most ``rate * duration`` (or ``max_requests``)
requests, each bounded by ``timeout``, and the whole run by
``duration + timeout + 2 s``.

Outcomes (one per request):

* ``ok``       -- 2xx response, complete.
* ``refused``  -- ECONNREFUSED (nobody listening).
* ``reset``    -- ECONNRESET, EPIPE, or the connection closed before a
  complete response ("short").
* ``timeout``  -- no complete response within ``timeout`` of the send.
* ``lost``     -- scheduled but never sent (the run was cut short), or a
  non-2xx status (kind ``http_<code>``).
* ``error``    -- any other OS error (kind = errno name, e.g. ``EMFILE``).

Times are ``time.monotonic()`` seconds (asyncio's default loop clock), so a
harness can align its own restart triggers with ``Record.scheduled``.

Usage::

    res = loadgen.run("127.0.0.1", 8080, rate=1000, duration=5)
    print(res.summary())
    h = loadgen.start("127.0.0.1", 8080, rate=1000, duration=30)
    ...  # trigger restarts, remember time.monotonic() of each trigger
    res = h.result()
    loadgen.window_stats(res, [(t, t + 1.0) for t in triggers])
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import gc
import math
import os
import pickle
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import epoll_client
from bench.loadresult import (
    LOST,
    OK,
    OUTCOMES,
    TIMEOUT,
    UNSENT,
    Record,
    Result,
    Stats,
    added_latency,
    percentiles,
    steady_stats,
    window_stats,
)
from bench.loadwire import MAX_RESPONSE, PID_BODY, Short, Target, classify, parse_head, raise_nofile

__all__ = [
    "OUTCOMES",
    "Handle",
    "Record",
    "Result",
    "Stats",
    "added_latency",
    "fast_python",
    "percentiles",
    "run",
    "run_async",
    "start",
    "steady_stats",
    "window_stats",
]


# --------------------------------------------------------------------------- I/O


class _Conn:
    """A non-blocking socket plus its unread bytes."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""


async def _read_response(
    loop: asyncio.AbstractEventLoop, conn: _Conn, *, until_eof: bool
) -> tuple[int, int, bool]:
    """Read one response; return (status, pid, server wants close)."""
    sock = conn.sock
    buf = conn.buf
    while True:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            break
        if len(buf) > MAX_RESPONSE:
            raise Short("response head too large")
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            raise Short("EOF before response head")
        buf += chunk
    status, length, close, pid = parse_head(buf[:end])
    body_start = end + 4
    if length is None:
        if not until_eof and not close:
            raise Short("no Content-Length on a keep-alive response")
        while True:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_RESPONSE:
                raise Short("response too large")
        body = buf[body_start:]
        conn.buf = b""
        close = True
    else:
        while len(buf) - body_start < length:
            chunk = await loop.sock_recv(sock, 65536)
            if not chunk:
                raise Short("EOF inside body")
            buf += chunk
        body = buf[body_start : body_start + length]
        conn.buf = buf[body_start + length :]
    if not pid:
        bm = PID_BODY.search(body[:256])
        if bm:
            pid = int(bm.group(1))
    return status, pid, close


async def _connect(loop: asyncio.AbstractEventLoop, target: Target) -> _Conn:
    sock = socket.socket(target.family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if target.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, target.addr)
    except BaseException:
        sock.close()
        raise
    return _Conn(sock)


def _stale(sock: socket.socket) -> bool:
    """True if an idle keep-alive connection is readable: the server closed it (or sent
    something unasked). Checking before reuse is what every HTTP client does (urllib3's
    ``is_connection_dropped``); it is not a retry: nothing was sent on it."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


class _Pool:
    """Keep-alive connections: at most ``size`` open, idle ones reused LIFO."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: list[_Conn] = []
        self.open = 0
        self.cond = asyncio.Condition()

    async def acquire(self, loop: asyncio.AbstractEventLoop, target: Target) -> _Conn:
        async with self.cond:
            while not self.idle and self.open >= self.size:
                await self.cond.wait()
            while self.idle:
                conn = self.idle.pop()
                if not _stale(conn.sock):
                    return conn
                conn.sock.close()  # the server closed it while idle (FIN or RST waiting)
                self.open -= 1
            self.open += 1
        try:
            return await _connect(loop, target)
        except BaseException:
            await self.discard(None)
            raise

    async def release(self, conn: _Conn) -> None:
        async with self.cond:
            self.idle.append(conn)
            self.cond.notify()

    async def discard(self, conn: _Conn | None) -> None:
        if conn is not None:
            conn.sock.close()
        async with self.cond:
            self.open -= 1
            self.cond.notify()

    def close(self) -> None:
        for c in self.idle:
            c.sock.close()
        self.idle.clear()


async def _one(
    loop: asyncio.AbstractEventLoop,
    target: Target,
    res: Result,
    rid: int,
    timeout: float,
    pool: _Pool | None,
) -> None:
    sched = res.scheduled[rid]
    res.send_lag[rid] = loop.time() - sched
    res.sent += 1
    conn: _Conn | None = None
    reusable = False
    try:
        async with asyncio.timeout(timeout):
            if pool is None:
                conn = await _connect(loop, target)
            else:
                conn = await pool.acquire(loop, target)
            await loop.sock_sendall(conn.sock, target.payload(rid))
            status, pid, close = await _read_response(loop, conn, until_eof=pool is None)
        now = loop.time()
        res.status[rid] = status
        res.pid[rid] = pid
        if 200 <= status < 300:
            res.outcome[rid] = OK
            res.latency[rid] = now - sched
            res.ok += 1
        else:
            res.fail(rid, LOST, f"http_{status}")
        reusable = pool is not None and not close
    except Exception as exc:
        res.fail(rid, *classify(exc))
    finally:
        if pool is None:
            if conn is not None:
                conn.sock.close()
        elif conn is not None:
            if reusable:
                await pool.release(conn)
            else:
                await pool.discard(conn)


async def run_async(
    host: str,
    port: int,
    *,
    rate: float,
    duration: float,
    keepalive: bool = False,
    timeout: float = 2.0,
    request: bytes | None = None,
    unix_path: str | None = None,
    max_requests: int | None = None,
    pool_size: int = 50,
    stop: asyncio.Event | None = None,
    start_at: float | None = None,
) -> Result:
    """Run the open-loop schedule on the running loop and return the Result.

    ``stop`` (an Event) ends the schedule early: requests whose time has not come
    are dropped from the run (not counted), the in-flight ones finish.
    ``start_at`` is the monotonic time of request 0 (default: now + 10 ms).
    """
    if rate <= 0 or duration < 0 or timeout <= 0:
        raise ValueError(f"need rate > 0, duration >= 0, timeout > 0: {rate!r} {duration!r}")
    loop = asyncio.get_running_loop()
    n = math.ceil(rate * duration)
    if max_requests is not None:
        n = min(n, max_requests)
    target = Target(host, port, unix_path, request, keepalive)
    raise_nofile(int(rate * timeout * 1.5) + pool_size + 256)
    t0 = start_at if start_at is not None else loop.time() + 0.01
    res = Result.planned(rate=rate, duration=duration, keepalive=keepalive, t0=t0, n=n)
    pool = _Pool(pool_size) if keepalive else None
    tasks: set[asyncio.Task[None]] = set()
    cpu0 = time.process_time()
    deadline = t0 + duration + timeout + 2.0
    i = 0
    try:
        while i < n:
            if stop is not None and stop.is_set():
                break
            now = loop.time()
            if now > deadline:
                break
            while i < n and res.scheduled[i] <= now:
                t = loop.create_task(_one(loop, target, res, i, timeout, pool))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
            if i < n:
                delay = res.scheduled[i] - loop.time()
                # a plain sleep (wait_for would build a task per request); a stop is seen
                # within 50 ms even at low rates
                await asyncio.sleep(max(0.0, delay if stop is None else min(delay, 0.05)))
        if tasks:
            await asyncio.wait(
                set(tasks),
                timeout=max(0.1, min(deadline, loop.time() + timeout + 1.0) - loop.time()),
            )
        for t in list(tasks):
            t.cancel()
        if tasks:
            await asyncio.wait(set(tasks), timeout=1.0)
    finally:
        if pool is not None:
            pool.close()
    res.wall = loop.time() - t0
    res.cpu_s = time.process_time() - cpu0
    # Truncate a stopped run to what was scheduled; anything dispatched but
    # unfinished (cancelled at the deadline) is a timeout; never dispatched = lost.
    res.truncate(i)
    for j, o in enumerate(res.outcome):
        if o == UNSENT:
            if math.isnan(res.send_lag[j]):
                res.fail(j, LOST, "unsent")
            else:
                res.fail(j, TIMEOUT, "timeout")
    return res


ENGINES = ("auto", "epoll", "asyncio")


def _epoll_kwargs(engine: str, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """run_async's keywords for epoll_client.Engine, or None if the asyncio engine runs:
    ``auto`` takes epoll for a new connection per request, asyncio for keep-alive."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    keepalive = bool(kwargs.get("keepalive", False))
    if engine == "epoll" and keepalive:
        raise ValueError("the epoll engine runs a new connection per request (keepalive=False)")
    if engine == "asyncio" or keepalive or kwargs.get("stop") is not None:
        return None
    return {k: v for k, v in kwargs.items() if k not in ("keepalive", "pool_size")}


def run(host: str, port: int, *, engine: str = "auto", **kwargs: Any) -> Result:
    """Run the schedule synchronously: epoll_client's loop for a new connection per request
    (a quarter of asyncio's CPU per request), else a fresh asyncio loop (see run_async)."""
    epoll_kw = _epoll_kwargs(engine, kwargs)
    if epoll_kw is not None:
        return epoll_client.run(host, port, **epoll_kw)
    return asyncio.run(run_async(host, port, **kwargs))


SYSTEM_PYTHON = "/usr/bin/python3"
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fast_python() -> str:
    """The interpreter for the generator process (and the bench's services).

    ``$SDACTIVATE_BENCH_PYTHON`` if set; else the distribution's ``/usr/bin/python3`` when it
    is CPython 3.11+; else this interpreter. Interpreter builds differ a lot: on the
    measurement VM a pyenv 3.11.7 (no PGO/LTO) spends 3.2 s of user CPU on 10,000 requests
    where Debian's 3.11.2 spends 2.2 s, and starts 3x slower. A generator that needs more of
    its CPU queues its own sends, which shows up as latency no server caused. Both run the
    stdlib-only generator and the dependency-free sdactivate alike.
    """
    chosen = os.environ.get("SDACTIVATE_BENCH_PYTHON")
    if chosen:
        return chosen
    return _system_python() or sys.executable


_probed: list[str | None] = []


def _system_python() -> str | None:
    if not _probed:
        found = None
        if os.path.realpath(SYSTEM_PYTHON) == os.path.realpath(sys.executable):
            found = sys.executable
        elif os.access(SYSTEM_PYTHON, os.X_OK):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                probe = subprocess.run(
                    [SYSTEM_PYTHON, "-I", "-c", "import sys; print(sys.version_info >= (3, 11))"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    check=False,
                )
                if probe.stdout.strip() == "True":
                    found = SYSTEM_PYTHON
        _probed.append(found)
    return _probed[0]


class Handle:
    """A load run in a child process; ``stop()`` ends it early, ``result()`` collects it.

    The generator gets an interpreter of its own: in a thread of the harness it would share
    the harness's GIL and heap, and a harness thread that holds the GIL while it waits for
    the (busy) service CPU stalls every request in flight -- measured as 5-60 ms "service"
    latency that no server caused. The child is single-threaded, freezes its import-time
    objects out of the cyclic GC (gc.freeze), dies with its parent (PR_SET_PDEATHSIG) and
    is bounded by its own deadline. Times are CLOCK_MONOTONIC, shared by every process.
    """

    def __init__(self, host: str, port: int, kwargs: dict[str, Any]) -> None:
        cpus = kwargs.pop("cpus", None)
        self.t0: float = math.nan  # monotonic time of request 0, valid once started
        self._bound = float(kwargs.get("duration", 0)) + float(kwargs.get("timeout", 2.0)) + 15.0
        self._result: Result | None = None
        # `-m bench.loadgen` from the checkout: the stock interpreter finds the package there
        # (it has no venv .pth); the module runs as __main__ (see _pack).
        self._proc = subprocess.Popen(
            [fast_python(), "-m", "bench.loadgen", "--child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
            cwd=_CHECKOUT,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        job = (host, port, kwargs, sorted(cpus) if cpus else None, os.getpid())
        self._proc.stdin.write(pickle.dumps(job))
        self._proc.stdin.close()
        self._out = self._proc.stdout.fileno()
        line = b""
        deadline = time.monotonic() + 20.0
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                self._kill()
                raise TimeoutError("load generator process did not start")
            chunk = os.read(self._out, 1)
            if not chunk:
                self._proc.wait()
                raise RuntimeError(f"load generator exited with status {self._proc.returncode}")
            line += chunk
        self.t0 = float(line.split()[1])

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        self._proc.wait()

    def stop(self) -> None:
        """End the schedule now; in-flight requests still finish (bounded by timeout)."""
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)

    def result(self, timeout: float | None = None) -> Result:
        """Wait for the run to end (default bound: its own deadline + 15 s) and return it."""
        if self._result is not None:
            return self._result
        deadline = time.monotonic() + (timeout if timeout is not None else self._bound)
        stopped = False
        chunks: list[bytes] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                if stopped:
                    self._kill()
                    raise TimeoutError("load generator did not finish")
                self.stop()
                stopped, deadline = True, time.monotonic() + 10.0
                continue
            if not select.select([self._out], [], [], left)[0]:
                continue
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        # The pipe's file object owns the fd: closing the number behind its back left it to
        # close that number again when collected, by then maybe a later run's pipe (EBADF).
        assert self._proc.stdout is not None
        self._proc.stdout.close()
        self._proc.wait()
        if self._proc.returncode != 0 or not chunks:
            raise RuntimeError(f"load generator exited with status {self._proc.returncode}")
        state = pickle.loads(b"".join(chunks))
        if "failure" in state:
            raise RuntimeError(f"load generator failed: {state['failure']}")
        self._result = _unpack(state)
        return self._result


_ARRAYS = ("scheduled", "latency", "outcome", "status", "pid", "send_lag")


def _pack(res: Result) -> dict[str, Any]:
    """A Result as builtins only (arrays as bytes): the child may run as ``__main__``."""
    state = {k: v for k, v in vars(res).items() if k not in _ARRAYS}
    for name in _ARRAYS:
        arr = getattr(res, name)
        state[name] = (arr.typecode, arr.tobytes())
    return state


def _unpack(state: dict[str, Any]) -> Result:
    arrays = {}
    for name in _ARRAYS:
        code, raw = state.pop(name)
        arrays[name] = array.array(code)
        arrays[name].frombytes(raw)
    res = Result(**state)
    for name, arr in arrays.items():
        setattr(res, name, arr)
    return res


def lock_memory(libc: Any) -> bool:
    """mlockall(MCL_CURRENT | MCL_FUTURE): keep this process's pages resident, so a measuring
    process never waits for a page the kernel dropped (a VM that pages out cold page cache
    -- DAMON ``pageout``, as on the measurement VM -- made the generator stall up to 45 ms on
    a major fault while its CPU was free). Needs CAP_IPC_LOCK or a large RLIMIT_MEMLOCK;
    without either it is skipped."""
    return bool(libc.mlockall(1 | 2) == 0)  # MCL_CURRENT | MCL_FUTURE


def _child() -> int:
    """``loadgen.py --child``: read the job from stdin, print ``T0 <t0>``, run, print the
    pickled result (see Handle)."""
    host, port, kwargs, cpus, parent = pickle.load(sys.stdin.buffer)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        lock_memory(libc)
    if os.getppid() != parent:
        return 1
    if cpus:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, set(cpus))
    out = sys.stdout.buffer

    engine = kwargs.pop("engine", "auto")

    async def go() -> Result:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        t0 = loop.time() + 0.01
        out.write(f"T0 {t0!r}\n".encode())
        out.flush()
        return await run_async(host, port, stop=stop, start_at=t0, **kwargs)

    def go_epoll(epoll_kw: dict[str, Any]) -> Result:
        t0 = time.monotonic() + 0.01
        eng = epoll_client.Engine(host, port, start_at=t0, **epoll_kw)
        signal.signal(signal.SIGTERM, lambda *_: eng.stop())
        out.write(f"T0 {t0!r}\n".encode())
        out.flush()
        return eng.run()

    try:
        epoll_kw = _epoll_kwargs(engine, kwargs)
        gc.collect()
        gc.freeze()  # import-time objects: never scanned again by a full collection
        state = _pack(go_epoll(epoll_kw) if epoll_kw is not None else asyncio.run(go()))
    except Exception as exc:  # reported to the parent, which raises it
        state = {"failure": f"{type(exc).__name__}: {exc}"}
    # The run is over: a stop signal now must not cut the result short. Under
    # PYTHONUNBUFFERED=1 stdout is a raw FileIO whose write() returns a short count when a
    # signal lands mid-write (the parent then read "pickle data was truncated").
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out.flush()
    write_all(sys.stdout.fileno(), pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


def write_all(fd: int, data: bytes, write: Callable[[int, bytes], int] = os.write) -> None:
    """Write every byte of ``data`` to ``fd``: write(2) may write fewer (a pipe, a signal)."""
    view = memoryview(data)
    while view:
        view = view[write(fd, view) :]


def start(host: str, port: int, **kwargs: Any) -> Handle:
    """Run ``run_async(host, port, **kwargs)`` in a child process; return its Handle.

    Extra keyword ``cpus`` (a set of CPU numbers) pins that process, e.g. ``cpus={1}``.
    Returns once the schedule's ``t0`` is known (the child started its event loop).
    """
    return Handle(host, port, dict(kwargs))


if __name__ == "__main__" and sys.argv[1:] == ["--child"]:
    sys.exit(_child())
