"""Background jobs in the server: each runs on a schedule, once at a time across every
app process (a PostgreSQL advisory lock decides who runs it; SQLite has one process)."""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import Engine, text

log = structlog.get_logger(__name__)


@dataclass
class Job:
    name: str
    interval_seconds: float
    run: Callable[[], object]
    next_run_monotonic: float = 0.0


def run_exclusively(engine: Engine, name: str, work: Callable[[], object]) -> bool:
    """Run ``work`` unless another process is running the job of the same name right now."""
    if engine.dialect.name != "postgresql":
        work()
        return True
    key = zlib.crc32(f"airtime-job:{name}".encode())
    with engine.connect() as connection:
        locked = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
        connection.commit()
        if not locked:
            return False
        try:
            work()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()
    return True


class Scheduler:
    """A daemon thread that runs due jobs; a failing job is logged and tried again later."""

    def __init__(self, engine: Engine, jobs: list[Job], *, tick_seconds: float = 1.0) -> None:
        self.engine = engine
        self.jobs = jobs
        self.tick_seconds = tick_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)

    def start(self) -> None:
        now = time.monotonic()
        for job in self.jobs:
            job.next_run_monotonic = now + job.interval_seconds
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(self.tick_seconds):
            for job in self.jobs:
                if time.monotonic() < job.next_run_monotonic:
                    continue
                job.next_run_monotonic = time.monotonic() + job.interval_seconds
                try:
                    ran = run_exclusively(self.engine, job.name, job.run)
                    log.debug("job_done" if ran else "job_skipped", job=job.name)
                except Exception:
                    log.exception("job_failed", job=job.name)
