"""Scheduler jobs that run inside `edge-node serve`: no-show expiry, the daily KPI snapshot,
the nightly backup and the daily retention purge."""

from __future__ import annotations

import logging

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from flask import Flask

from edge_node import lifecycle
from edge_node.domain import kpi, queue
from edge_node.errors import EdgeError
from edge_node.node import Node
from edge_node.ops.backup import check_schedule, scheduled_backup
from edge_node.ops.retention import run

log = logging.getLogger(__name__)
RETENTION_HOUR, RETENTION_MINUTE = 3, 40  # local time: after the backup, before opening


def expire_no_shows(node: Node) -> int:
    """Close no-shows whose rejoin window has passed."""
    now = node.now()
    count = node.write(lambda db: queue.expire_no_shows(db, now))
    if count:
        log.info("expired %d no-show tickets", count)
    return count


def snapshot_kpis(node: Node) -> None:
    """Store today's KPIs as a synced record (replaces an earlier snapshot of the day)."""
    day, now = node.today(), node.timestamp()
    node.write(lambda db: kpi.store_snapshot(db, day, now, node.settings))
    log.info("KPI snapshot stored for %s", day)


def backup_daily(node: Node) -> None:
    """The daily encrypted backup, then rotation (a failure is logged; next day retries)."""
    try:
        made = scheduled_backup(node.settings, node.keys)
    except (EdgeError, OSError) as exc:
        log.error("daily backup failed: %s", getattr(exc, "message", None) or exc)
        return
    log.info("daily backup %s", made.path.name)


def retention_daily(node: Node) -> None:
    """The daily retention purge (edge_node/ops/retention.py); a failure is logged, next day
    retries."""
    try:
        run(node)
    except Exception as exc:  # the scheduler would only log it less clearly
        log.error("retention purge failed: %s: %s", type(exc).__name__, exc)


def add_jobs(scheduler: BaseScheduler, node: Node) -> None:
    """Register the jobs; a failing run is logged and retried at the next interval."""
    scheduler.add_job(expire_no_shows, "interval", args=[node], id="expire_no_shows",
                      seconds=node.settings["expiry_job_seconds"], coalesce=True,
                      max_instances=1)
    scheduler.add_job(snapshot_kpis, "cron", args=[node], id="kpi_snapshot",
                      hour=node.settings["kpi_snapshot_hour"], minute=55, coalesce=True,
                      max_instances=1)

    check_schedule(node.settings)
    scheduler.add_job(backup_daily, "cron", args=[node], id="backup",
                      hour=node.settings["backup_hour"], minute=30, coalesce=True,
                      max_instances=1)
    scheduler.add_job(retention_daily, "cron", args=[node], id="retention",
                      hour=RETENTION_HOUR, minute=RETENTION_MINUTE, coalesce=True,
                      max_instances=1)


def init_app(app: Flask, node: Node) -> BackgroundScheduler:
    """Start the scheduler with the node's jobs; the app's stop waits for a running job."""
    scheduler = BackgroundScheduler(timezone=node.settings["timezone"])
    add_jobs(scheduler, node)
    scheduler.start()
    lifecycle.on_stop(app, "scheduler", lambda: scheduler.shutdown(wait=True))
    return scheduler
