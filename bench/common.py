"""Helpers every Airtime benchmark shares: throwaway databases, a pgbench baseline, timed client
threads, a lean keep-alive HTTP client for them and a result table that puts each figure next
to what plain PostgreSQL does on the same machine.

Figures are only comparable on one machine, so every benchmark measures pgbench's built-in
TPC-B-like transaction first and reports its own figures as a ratio to that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import select
import socket
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, create_engine, make_url, text

DEFAULT_ADMIN_URL = os.environ.get(
    "AIRTIME_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
# Bounds, so a typo on the command line cannot occupy the machine for hours.
SECONDS_MAX = 600
CLIENTS_MAX = 200
PGBENCH_TIMEOUT_SECONDS = 900
_TPS_PATTERN = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def add_common_arguments(parser: argparse.ArgumentParser, *, seconds: float = 10, clients: int = 4) -> None:
    """The options every benchmark takes: phase length, client threads, PostgreSQL server."""
    parser.add_argument(
        "--seconds", type=float, default=seconds, help=f"length of each measured phase (default {seconds})"
    )
    parser.add_argument(
        "--clients", type=int, default=clients, help=f"client threads/connections (default {clients})"
    )
    parser.add_argument(
        "--database-url",
        default=DEFAULT_ADMIN_URL,
        help="a PostgreSQL database on the server to use; throwaway databases are created and "
        "dropped next to it (default: $AIRTIME_BENCH_POSTGRES_URL or %(default)s)",
    )


def check_common_arguments(parser: argparse.ArgumentParser, arguments: argparse.Namespace) -> None:
    if not 0 < arguments.seconds <= SECONDS_MAX:
        parser.error(f"--seconds must be in (0, {SECONDS_MAX}]")
    if not 1 <= arguments.clients <= CLIENTS_MAX:
        parser.error(f"--clients must be in [1, {CLIENTS_MAX}]")


def sqlalchemy_url(url: str) -> str:
    """The URL with the psycopg 3 driver, as Airtime's engines expect it."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


@contextmanager
def throwaway_database(server_url: str, prefix: str) -> Iterator[str]:
    """Create an empty database next to ``server_url``'s, yield its URL, then drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(sqlalchemy_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield (
                make_url(sqlalchemy_url(server_url)).set(database=name).render_as_string(hide_password=False)
            )
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _libpq_arguments(url: str) -> tuple[list[str], dict[str, str]]:
    """pgbench's connection options and environment for a SQLAlchemy-style URL."""
    parsed = make_url(sqlalchemy_url(url))
    arguments = []
    if parsed.host:
        arguments += ["-h", parsed.host]
    if parsed.port:
        arguments += ["-p", str(parsed.port)]
    if parsed.username:
        arguments += ["-U", parsed.username]
    environment = dict(os.environ)
    if parsed.password:
        environment["PGPASSWORD"] = str(parsed.password)
    return [*arguments, parsed.database or "postgres"], environment


@dataclass(frozen=True)
class PgbenchResult:
    transactions_per_second: float
    output: str


def run_pgbench(
    url: str, *, clients: int, seconds: float, scale: int = 10, threads: int = 2
) -> PgbenchResult:
    """Initialise pgbench tables at ``scale`` in the database at ``url`` and run TPC-B-like on it.

    Returns transactions per second without initial connection time, as pgbench reports it.
    """
    connection, environment = _libpq_arguments(url)
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), *connection],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
        timeout=PGBENCH_TIMEOUT_SECONDS,
    )
    completed = subprocess.run(
        [
            "pgbench",
            "-b",
            "tpcb-like",
            "-c",
            str(clients),
            "-j",
            str(min(threads, clients)),
            "-T",
            str(max(1, round(seconds))),
            *connection,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=environment,
        timeout=PGBENCH_TIMEOUT_SECONDS,
    )
    match = _TPS_PATTERN.search(completed.stdout)
    if match is None:
        raise RuntimeError(f"pgbench printed no tps line:\n{completed.stdout}\n{completed.stderr}")
    return PgbenchResult(transactions_per_second=float(match.group(1)), output=completed.stdout)


T = TypeVar("T")


@dataclass(frozen=True)
class Baseline:
    """pgbench's tps measured before and after the phase it is the baseline of: this machine's
    speed drifts (consecutive 15 s runs of pgbench alone have differed by a fifth), so the
    ratio is taken to their mean and both are shown."""

    before: float
    after: float

    @property
    def transactions_per_second(self) -> float:
        return (self.before + self.after) / 2

    def note(self, clients: int, scale: int) -> str:
        return (
            f"mean of {self.before:,.0f} before and {self.after:,.0f} after; "
            f"{clients} clients, -j 2, scale {scale}"
        )


def pgbench_around(
    phase: Callable[[], T], *, server_url: str, clients: int, seconds: float, scale: int, console: Console
) -> tuple[Baseline, T]:
    """Run pgbench in a throwaway database before and after ``phase()``: (baseline, its result)."""

    def once(when: str) -> float:
        console.print(f"pgbench {when}: -i -s {scale}, tpcb-like with {clients} clients for {seconds:g} s …")
        with throwaway_database(server_url, "airtime_bench_pgbench") as url:
            return run_pgbench(url, clients=clients, seconds=seconds, scale=scale).transactions_per_second

    before = once("before")
    result = phase()
    return Baseline(before=before, after=once("after")), result


def make_history(
    count: int, clients: int, one: Callable[[int], str], *, engine: Engine, console: Console, what: str
) -> list[list[str]]:
    """``count`` operations (``one(client)``, spread over ``clients`` threads) before the clock
    starts, then ANALYZE; what each client's operations returned.

    An operator's database has history, and PostgreSQL plans for what its statistics say. On
    tables just created the statistics say "empty", and a plan cached then (a foreign key's
    check, a prepared statement) scans the whole table, which grows with every operation,
    until autovacuum analyzes it a minute or so later: three such scans per redemption were
    once most of PostgreSQL's time. What would be measured is that first minute, not the
    service. ANALYZE also makes every cached plan be made again."""
    made: list[list[str]] = [[] for _ in range(clients)]
    if count <= 0:
        return made
    console.print(f"history: {count:,} {what} before the clock starts, then ANALYZE …")
    failed: list[str] = []

    def make(number: int) -> None:
        try:
            for _ in range(count // clients + (number < count % clients)):
                made[number].append(one(number))
        except Exception as error:  # noqa: BLE001 - reported below, in the main thread
            failed.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=make, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failed:
        raise RuntimeError(f"the history failed: {failed[0]}")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("ANALYZE"))
    return made


@dataclass(frozen=True)
class Throughput:
    operations: int
    elapsed_seconds: float
    failures: int = 0

    @property
    def per_second(self) -> float:
        return self.operations / self.elapsed_seconds if self.elapsed_seconds else 0.0


def run_clients(
    clients: int,
    seconds: float,
    operation: Callable[[int], int],
    *,
    warm_up: Callable[[int], None] | None = None,
) -> Throughput:
    """Call ``operation(client_number)`` from ``clients`` threads for ``seconds``, all starting together.

    ``operation`` returns how many operations it completed (1 for one transfer, the batch size
    for a batch); an exception counts as a failure and the client goes on. ``warm_up`` runs in
    each thread before the start, e.g. to open its database connection.
    """
    barrier = threading.Barrier(clients + 1)
    lock = threading.Lock()
    totals = {"operations": 0, "failures": 0}
    deadline = [0.0]

    def client(number: int) -> None:
        if warm_up is not None:
            warm_up(number)
        barrier.wait()
        operations = failures = 0
        while time.perf_counter() < deadline[0]:
            try:
                operations += operation(number)
            except Exception:  # noqa: BLE001 - a benchmark counts failures and goes on
                failures += 1
        with lock:
            totals["operations"] += operations
            totals["failures"] += failures

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(clients)]
    for thread in threads:
        thread.start()
    # Set the deadline only once every client is ready, then release them.
    deadline[0] = time.perf_counter() + seconds + 3600
    barrier.wait()
    started = time.perf_counter()
    deadline[0] = started + seconds
    for thread in threads:
        thread.join()
    # Operations still running at the deadline finish and count, so measure to the last one.
    elapsed = time.perf_counter() - started
    return Throughput(operations=totals["operations"], elapsed_seconds=elapsed, failures=totals["failures"])


# --- the load generator's HTTP client ------------------------------------------------------

# What httpx 0.28 sent with every request, so the server parses the same headers as before
# (it does not compress responses today; if it starts to, the client decodes them).
_DEFAULT_HEADERS = {
    "Accept": "*/*",
    "Accept-Encoding": "gzip, deflate",
    "Connection": "keep-alive",
    "User-Agent": "airtime-bench",
}
_RECEIVE_BYTES = 65_536


class ResponseHeaders:
    """A response's header fields, looked up without regard to case (as ``email.message``)."""

    def __init__(self, fields: list[tuple[str, str]]) -> None:
        self._fields = fields

    def get(self, name: str, default: str = "") -> str:
        wanted = name.lower()
        return next((value for key, value in self._fields if key.lower() == wanted), default)

    def get_all(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for key, value in self._fields if key.lower() == wanted]


class KeepAliveClient:
    """One keep-alive HTTP/1.1 connection for one client thread of a benchmark, on a plain socket.

    The load generator runs on the same 2 cores as the server and PostgreSQL it measures, so
    every millisecond of client CPU is taken from them. A request through an ``httpx.Client``
    cost about 0.9-1 ms of client CPU and one through ``http.client`` about 0.3 ms (its
    header parsing is the ``email`` package's); this client writes each request in one
    ``sendall`` and reads the response with a few ``recv`` calls and byte searches. It reads
    ``Content-Length`` and chunked bodies. Every request waits at most ``timeout`` seconds
    for the connection and for each read. A connection the server has closed (keep-alive
    timeout, ``Connection: close``) is replaced before the next request; one that fails during
    a request is closed and the error raised (nothing is retried, so the benchmark counts it),
    and the next request opens a new one. Redirects are not followed and cookies are not
    kept: pass a ``Cookie`` header. Not for use by more than one thread at a time.
    """

    def __init__(self, base_url: str, *, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"KeepAliveClient needs an http:// base URL, not {base_url!r}")
        self.netloc = parts.netloc
        self._address = (parts.hostname, parts.port or 80)
        self._timeout = timeout
        self._socket: socket.socket | None = None
        self._buffer = b""
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in _DEFAULT_HEADERS.items())

    def path_of(self, url: str) -> str:
        """The path and query of ``url``, which may be absolute on this client's server."""
        parts = urlsplit(url)
        if parts.netloc and parts.netloc != self.netloc:
            raise ValueError(f"{url!r} is not on {self.netloc}")
        return parts.path + (f"?{parts.query}" if parts.query else "")

    def request(
        self, method: str, url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> tuple[int, ResponseHeaders, bytes]:
        """Send one request and read the whole response: (status, headers, body)."""
        if self._socket is not None and (self._buffer or _closed_by_peer(self._socket)):
            self.close()  # opened again below
        if self._socket is None:
            self._socket = socket.create_connection(self._address, timeout=self._timeout)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        start = f"{method} {self.path_of(url)} HTTP/1.1\r\nHost: {self.netloc}\r\n"
        head = f"{start}{self._fixed}{extra}{length}\r\n"
        try:
            self._socket.sendall(head.encode("latin-1") + (body or b""))
            status, fields, data, keep_alive = self._read_response(method)
        except BaseException:
            self.close()
            raise
        if not keep_alive:
            self.close()
        response_headers = ResponseHeaders(fields)
        if response_headers.get("Content-Encoding") in ("gzip", "deflate"):
            data = _decompress(data)
        return status, response_headers, data

    def _receive(self) -> None:
        assert self._socket is not None
        chunk = self._socket.recv(_RECEIVE_BYTES)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        self._buffer += chunk

    def _read_response(self, method: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            self._receive()
        head, self._buffer = self._buffer[:end].decode("latin-1"), self._buffer[end + 4 :]
        status_line, *lines = head.split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        fields = [(name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines)]
        found = {name.lower(): value for name, value in fields}
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            data = b""
        elif found.get("transfer-encoding", "").lower() == "chunked":
            data = self._read_chunked()
        elif "content-length" in found:
            data = self._read_exactly(int(found["content-length"]))
        else:  # the body ends when the server closes the connection
            while True:
                assert self._socket is not None
                chunk = self._socket.recv(_RECEIVE_BYTES)
                if not chunk:
                    break
                self._buffer += chunk
            data, self._buffer = self._buffer, b""
            return status, fields, data, False
        return status, fields, data, found.get("connection", "").lower() != "close"

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._receive()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            while (end := self._buffer.find(b"\r\n")) < 0:
                self._receive()
            size = int(self._buffer[:end].split(b";", 1)[0], 16)
            self._buffer = self._buffer[end + 2 :]
            if size == 0:
                while (end := self._buffer.find(b"\r\n")) < 0:
                    self._receive()
                trailer, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
                if not trailer:
                    return b"".join(parts)
                continue  # a trailer field: skip it
            parts.append(self._read_exactly(size))
            self._read_exactly(2)  # the chunk's CRLF

    def get(self, url: str, headers: Mapping[str, str] | None = None) -> tuple[int, ResponseHeaders, bytes]:
        return self.request("GET", url, None, headers)

    def post_json(
        self, url: str, body: Any, headers: Mapping[str, str] | None = None
    ) -> tuple[int, ResponseHeaders, bytes]:
        """POST ``body`` as JSON, encoded byte for byte as httpx 0.28 did (compact, UTF-8)."""
        data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        return self.request("POST", url, data, {**(headers or {}), "Content-Type": "application/json"})

    def post_form(
        self, url: str, fields: Mapping[str, str], headers: Mapping[str, str] | None = None
    ) -> tuple[int, ResponseHeaders, bytes]:
        """POST ``fields`` URL-encoded, as a browser's form (and httpx's ``data=``) sends them."""
        data = urlencode(fields).encode()
        return self.request(
            "POST", url, data, {**(headers or {}), "Content-Type": "application/x-www-form-urlencoded"}
        )

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        self._buffer = b""

    def __enter__(self) -> KeepAliveClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server closed an idle connection (or sent something unasked): readable now."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


def _decompress(data: bytes) -> bytes:
    try:
        return zlib.decompress(data, 47)  # gzip or zlib-wrapped deflate
    except zlib.error:
        return zlib.decompress(data, -15)  # raw deflate


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile (0.5 for the median, 0.99 for p99) by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


_CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine so far, from /proc/stat; (0, 0) elsewhere.

    The difference of two readings gives how busy all cores were in between, which says
    whether a phase was CPU-bound and whether something else was running at the same time.
    """
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds one process has used so far (0 if it is gone or not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # The command name may contain spaces; the fields we need follow its closing parenthesis.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_SECOND


def processes(*, parent: int | None = None, command: str | None = None) -> list[int]:
    """Ids of the processes with this parent and/or this command name (``comm``), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name, rest = stat.split(" (", 1)[1].rsplit(")", 1)
        parent_pid = int(rest.split()[1])
        if (parent is None or parent_pid == parent) and (command is None or name == command):
            found.append(int(entry.name))
    return found


def make_console() -> Console:
    """A console for results; when output is piped (CI logs, reports) the table is not squeezed."""
    console = Console()
    return console if console.is_terminal else Console(width=120)


@dataclass(frozen=True)
class Figure:
    name: str
    per_second: float
    unit: str = "/s"
    note: str = ""


def print_ratio_table(
    title: str, baseline: Figure, figures: list[Figure], console: Console | None = None
) -> None:
    """Print each figure with its ratio to the baseline (pgbench's tps on the same server)."""
    table = Table(title=title)
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column(f"ratio to {baseline.name}", justify="right", no_wrap=True)
    table.add_column("note")
    for figure in [baseline, *figures]:
        ratio = figure.per_second / baseline.per_second if baseline.per_second else float("nan")
        table.add_row(figure.name, f"{figure.per_second:,.0f} {figure.unit}", f"{ratio:.2f}", figure.note)
    (console or make_console()).print(table)


# --- memory ---------------------------------------------------------------------------------

RSS_SAMPLE_SECONDS = 0.05


def rss_kib(pid: int | str = "self") -> int:
    """The resident set size (VmRSS) of a process in KiB, or 0 if unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler:
    """Samples this process's VmRSS every 50 ms in a thread, for the peak of a phase."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, rss_kib())
            self._stop.wait(RSS_SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, rss_kib())
