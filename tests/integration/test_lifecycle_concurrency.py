"""The lifecycle sweep on PostgreSQL from several processes at once, and killed midway."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from airtime.clock import today
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.lifecycle.models import LineTransition
from airtime.lifecycle.service import sweep
from bench.lifecycle import seed_lines, verify

LINES = 10_000
PROCESSES = 4
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]


def _sweep_in_a_process(url: str) -> int:
    engine = make_engine(url)
    try:
        return sweep(make_session_factory(engine), chunk=200).total
    finally:
        engine.dispose()


def test_four_processes_sweeping_at_once_move_every_line_exactly_once(
    postgres_url, postgres_engine, pg_session_factory
):
    seed_lines(postgres_engine, count=LINES, today=today())
    context = multiprocessing.get_context("spawn")
    with context.Pool(PROCESSES) as pool:
        moved = pool.map(_sweep_in_a_process, [postgres_url] * PROCESSES)
    assert sum(moved) == LINES
    assert verify(postgres_engine, count=LINES) == []


_KILLABLE_SWEEP = """
import sys
from airtime.db.session import make_engine, make_session_factory
from airtime.lifecycle.service import sweep
sweep(make_session_factory(make_engine(sys.argv[1])), chunk=100)
"""


def test_a_sweep_killed_midway_then_resumed_leaves_nothing_half_done(
    postgres_url, postgres_engine, pg_session_factory
):
    seed_lines(postgres_engine, count=LINES, today=today())
    process = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_SWEEP, postgres_url],
        cwd=REPOSITORY_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPOSITORY_ROOT)},
    )
    factory = make_session_factory(postgres_engine)
    deadline = time.monotonic() + 120
    recorded = 0
    while time.monotonic() < deadline and process.poll() is None:
        with unit_of_work(factory) as session:
            recorded = session.scalar(select(func.count()).select_from(LineTransition)) or 0
        if recorded >= LINES // 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)  # no clean-up: whatever chunk was open is lost
    process.wait(timeout=30)
    assert 0 < recorded < LINES, "the sweep must be killed midway for this test to mean anything"
    # Every chunk committed before the kill is whole: each moved line has its transition and
    # each terminated line its breakage transfer, which verify() would catch once resumed.
    resumed = sweep(make_session_factory(postgres_engine))
    assert 0 < resumed.total < LINES
    assert verify(postgres_engine, count=LINES) == []
