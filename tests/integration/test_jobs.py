"""Background jobs run once at a time across processes (PostgreSQL advisory lock)."""

from __future__ import annotations

import threading

from airtime.jobs import Job, Scheduler, run_exclusively


def test_a_job_runs_once_at_a_time_across_connections(postgres_engine):
    running = threading.Event()
    release = threading.Event()
    runs: list[str] = []

    def slow_job():
        runs.append("first")
        running.set()
        release.wait(5)

    first = threading.Thread(target=run_exclusively, args=(postgres_engine, "test-job", slow_job))
    first.start()
    assert running.wait(5)
    # A second process trying meanwhile is skipped, not queued.
    assert run_exclusively(postgres_engine, "test-job", lambda: runs.append("second")) is False
    release.set()
    first.join(5)
    assert run_exclusively(postgres_engine, "test-job", lambda: runs.append("third")) is True
    assert runs == ["first", "third"]


def test_scheduler_runs_due_jobs_and_survives_a_failing_one(engine):
    ran = threading.Event()

    def broken():
        raise RuntimeError("boom")

    scheduler = Scheduler(
        engine, [Job("broken", 0.05, broken), Job("works", 0.05, ran.set)], tick_seconds=0.02
    )
    scheduler.start()
    try:
        assert ran.wait(5)
    finally:
        scheduler.stop()
