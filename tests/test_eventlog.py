"""The event log: events into SQLite and back out, retention, a kill -9, a full disk, and GET /v1/events on a
live server."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest

from server.eventlog import FILE_NAME, EventLog
from server.events_api import parse_instant
from server.metrics import Metrics

from .helpers import REPO, LiveServer, live_server, wait_until

T0 = 1_795_528_931.0  # 2026-11-24T14:02:11Z
DAY = 86_400.0


def event(
    seq: int,
    *,
    time_: float | None = None,
    stream: str = "camera",
    label: str | None = "dog",
    group: str | None = None,
    modality: str = "image",
    state: str = "start",
    **extra: Any,
) -> dict[str, Any]:
    out = {
        "type": "event", "modality": modality, "stream": stream, "client": 3, "label": label, "group": group,
        "state": state, "score": 4.25, "seq": seq, "ts": T0 + seq - 0.2, "time": T0 + seq if time_ is None else time_,
        **extra,
    }  # fmt: skip
    if state == "end":
        out["duration_s"] = 6.0
    return out


def counted(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"output": "eventlog", **labels}) or 0.0


def dropped(metrics: Metrics, reason: str) -> float:
    return counted(metrics, "sensorium_output_dropped_total", reason=reason)


@contextmanager
def running(folder: Path, days: float = 30, max_rows: int = 1_000_000, **options: Any) -> Iterator[EventLog]:
    log = EventLog(folder, days, max_rows, Metrics(), **options)
    log.start()
    try:
        yield log
    finally:
        log.close()


def publish_all(log: EventLog, events: list[dict[str, Any]]) -> None:
    target = log.committed + len(events)
    for item in events:
        log.publish(item)
    wait_until(lambda: log.committed >= target, what="the writer to commit")


def rows(folder: Path, sql: str = "SELECT count(*) FROM events") -> Any:
    with sqlite3.connect(folder / FILE_NAME) as db:
        return db.execute(sql).fetchone()[0]


# --- storing and querying ------------------------------------------------------------


def test_every_field_is_stored_and_each_filter_selects(tmp_path):
    events = [
        event(1, label="dog", group="animals"),
        event(2, label=None, group="animals"),
        event(3, label="cat", stream="porch", state="end"),
        event(4, label="siren", modality="audio", stream="mic", extra_field=[1, 2]),
    ]
    with running(tmp_path) as log:
        publish_all(log, events)
        assert log.query() == events  # as published, every field and one the log does not know of
        assert [e["seq"] for e in log.query(stream="porch")] == [3]
        assert [e["seq"] for e in log.query(label="dog")] == [1]
        assert [e["seq"] for e in log.query(group="animals")] == [1, 2]  # the group's own and its labels'
        assert [e["seq"] for e in log.query(modality="audio")] == [4]
        assert [e["seq"] for e in log.query(since=T0 + 2, until=T0 + 4)] == [2, 3]  # since <= time < until
        assert log.query(stream="camera", label="cat") == []
    with sqlite3.connect(tmp_path / FILE_NAME) as db:  # the columns documented for people reading the file
        row = db.execute(
            "SELECT time, modality, stream, client, label, group_name, state, score, seq, ts, duration_s "
            "FROM events WHERE seq = 3"
        ).fetchone()
    assert row == (T0 + 3, "image", "porch", 3, "cat", None, "end", 4.25, 3, T0 + 2.8, 6.0)


def test_the_newest_matching_events_come_oldest_first(tmp_path):
    # Published out of time order: the answer follows the server's clock, not the order of writing.
    times = [T0 + 5, T0 + 1, T0 + 3, T0 + 2, T0 + 4]
    with running(tmp_path) as log:
        publish_all(log, [event(i, time_=t) for i, t in enumerate(times)])
        assert [e["time"] for e in log.query(limit=3)] == [T0 + 3, T0 + 4, T0 + 5]
        assert [e["time"] for e in log.query(limit=3, until=T0 + 3)] == [T0 + 1, T0 + 2]  # the page before
        assert len(log.query(limit=1000)) == 5


def test_retention_by_age_and_by_rows(tmp_path):
    now = time.time()
    with running(tmp_path) as log:
        publish_all(log, [event(i, time_=now - 10 * DAY + i) for i in range(5)])
        publish_all(log, [event(10 + i, time_=now - 60 + i) for i in range(5)])
    with running(tmp_path, days=5):  # a trim runs when the log opens
        pass
    assert rows(tmp_path) == 5 and rows(tmp_path, "SELECT min(seq) FROM events") == 10
    with running(tmp_path, max_rows=3):
        pass
    assert rows(tmp_path) == 3 and rows(tmp_path, "SELECT min(seq) FROM events") == 12


def test_retention_runs_while_writing(tmp_path):
    with running(tmp_path, max_rows=100) as log:
        publish_all(log, [event(i) for i in range(2500)])
        # Every thousand writes: never more than max_rows plus the writes since the last trim.
        assert rows(tmp_path) <= 100 + 1000
        assert [e["seq"] for e in log.query(limit=1)] == [2499]
    assert rows(tmp_path, "SELECT min(seq) FROM events") > 2500 - 100 - 1000


def test_a_full_queue_drops_its_oldest_and_counts_it(tmp_path):
    with running(tmp_path, queue_size=10) as log:
        # Another connection holds the write lock: the writer waits for it, and its queue fills.
        holder = sqlite3.connect(tmp_path / FILE_NAME, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        for i in range(100):
            log.publish(event(i))  # never blocks, never raises
        holder.execute("ROLLBACK")
        holder.close()
        wait_until(lambda: log.committed + dropped(log.metrics, "overflow") == 100, what="every event accounted for")
        assert dropped(log.metrics, "overflow") >= 80
        assert log.query(limit=1)[0]["seq"] == 99  # the newest survive


def test_a_folder_that_cannot_be_made_leaves_the_log_off(tmp_path, caplog):
    (tmp_path / "file").write_text("not a folder")
    log = EventLog(tmp_path / "file" / "data", 30, 100, Metrics())
    with caplog.at_level(logging.ERROR, "sensorium.eventlog"):
        log.start()
    assert "cannot be opened" in caplog.text and str(tmp_path / "file") in caplog.text
    log.publish(event(1))  # counted, not raised
    assert dropped(log.metrics, "unavailable") == 1
    assert counted(log.metrics, "sensorium_output_up") == 0
    with pytest.raises(RuntimeError, match="cannot be opened"):
        log.query()
    log.close()


# --- crashes and full disks -------------------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from server.eventlog import EventLog
from server.metrics import Metrics

log = EventLog(Path(sys.argv[1]), 30, 1_000_000, Metrics())
log.start()
seq = 0
while True:
    for _ in range(50):
        seq += 1
        log.publish({"type": "event", "modality": "image", "stream": "camera", "client": 1, "label": "dog",
                     "group": None, "state": "start", "score": 4.0, "seq": seq, "ts": time.time(),
                     "time": time.time()})
    while log.committed < seq:
        time.sleep(0.001)
    print(seq, flush=True)  # committed: these must survive a kill
"""


def test_a_kill_9_loses_no_committed_event(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        committed = 0
        assert child.stdout is not None
        while committed < 1000:
            line = child.stdout.readline()
            assert line, "the writer process ended early"
            committed = int(line)
        os.kill(child.pid, signal.SIGKILL)  # it goes on publishing and writing meanwhile
    finally:
        child.kill()
        child.wait()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with running(tmp_path) as log:
        seqs = [e["seq"] for e in log.query(limit=1000, since=0)]
        count = rows(tmp_path)
    assert count >= committed and rows(tmp_path, "SELECT count(DISTINCT seq) FROM events") == count
    assert rows(tmp_path, f"SELECT count(*) FROM events WHERE seq <= {committed}") == committed
    assert seqs[-1] >= committed and seqs == list(range(seqs[0], seqs[-1] + 1))


def fill_until_full(log: EventLog, size: int) -> int:
    """Publish large events until the writer reports a full disk; the number published."""
    published = 0
    deadline = time.monotonic() + 30
    while dropped(log.metrics, "disk_full") == 0:
        assert time.monotonic() < deadline, "the disk never filled"
        log.publish(event(published, note="x" * size))
        published += 1
        if published % 20 == 0:
            wait_until(lambda target=published: log.committed + dropped(log.metrics, "disk_full") >= target)
    return published


def test_a_full_file_stops_writing_says_so_once_and_resumes(tmp_path, caplog):
    with (
        caplog.at_level(logging.WARNING, "sensorium.eventlog"),
        running(tmp_path, max_page_count=40, retry_s=0.2) as log,
    ):
        published = fill_until_full(log, 2000)
        for i in range(200):  # while it cannot write: still never blocks, the queue still drains
            log.publish(event(published + i))
        wait_until(lambda: log.committed + dropped(log.metrics, "disk_full") == published + 200)
        assert counted(log.metrics, "sensorium_output_up") == 0
        assert caplog.text.count("writing stopped") == 1
        assert "database or disk is full" in caplog.text and str(tmp_path / FILE_NAME) in caplog.text
        written = log.committed
        assert log.query(limit=1000)  # what was written can still be read

        log.max_page_count = None  # space returns: the next try opens the file afresh without the cap
        deadline = time.monotonic() + 10
        while log.committed == written:
            assert time.monotonic() < deadline, "writing never resumed"
            log.publish(event(10_000))
            time.sleep(0.05)
        assert counted(log.metrics, "sensorium_output_up") == 1
        assert "writing again" in caplog.text
        assert log.query(limit=1)[0]["seq"] == 10_000


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_real_full_disk_and_its_recovery(tiny_disk, caplog):
    with caplog.at_level(logging.WARNING, "sensorium.eventlog"), running(tiny_disk / "data", retry_s=0.2) as log:
        publish_all(log, [event(i) for i in range(10)])
        filler = tiny_disk / "filler"
        with open(filler, "wb", buffering=0) as out:  # take what space is left
            try:
                while out.write(b"\0" * 4096):
                    pass
            except OSError:
                pass
        fill_until_full(log, 2000)
        assert "writing stopped" in caplog.text and "full" in caplog.text
        filler.unlink()  # space returns
        written = log.committed
        deadline = time.monotonic() + 10
        while log.committed == written:
            assert time.monotonic() < deadline, "writing never resumed"
            log.publish(event(10_000))
            time.sleep(0.05)
        assert log.query(limit=1)[0]["seq"] == 10_000


# --- the route ------------------------------------------------------------------------

TOKEN = "events-token"


@contextmanager
def log_on(server: LiveServer, folder: Path) -> Iterator[EventLog]:
    """Our own log on the server's runtime, whatever the server set up itself."""
    runtime = server.app.state.runtime
    before = runtime.event_log
    log = EventLog(folder, 30, 1000, runtime.metrics)
    log.start()
    runtime.event_log = log
    try:
        yield log
    finally:
        runtime.event_log = before
        log.close()


def get_events(server: LiveServer, token: str | None = TOKEN, **params: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{server.http}/v1/events", params=params, headers=headers, timeout=10)


def error_code(response: httpx.Response, status: int) -> tuple[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    return error["code"], error["message"]


def test_the_route_with_a_token(settings, tmp_path):
    now = time.time()
    events = [
        event(1, time_=now - 30, label="dog", group="animals"),
        event(2, time_=now - 20, label="cat", group="animals", state="end"),
        event(3, time_=now - 10, label="siren", modality="audio", stream="mic"),
    ]
    with live_server(replace(settings, token=TOKEN)) as server, log_on(server, tmp_path / "log") as log:
        publish_all(log, events)
        assert get_events(server, token=None).status_code == 401
        assert get_events(server, token="wrong").status_code == 401
        response = get_events(server)
        assert response.status_code == 200, response.text
        assert response.json() == {"events": events}
        by_query_token = httpx.get(f"{server.http}/v1/events", params={"token": TOKEN, "stream": "mic"})
        assert [e["seq"] for e in by_query_token.json()["events"]] == [3]
        assert [e["seq"] for e in get_events(server, label="cat").json()["events"]] == [2]
        assert [e["seq"] for e in get_events(server, group="animals", limit=1).json()["events"]] == [2]
        assert [e["seq"] for e in get_events(server, modality="audio").json()["events"]] == [3]
        assert [e["seq"] for e in get_events(server, since=f"{now - 25}").json()["events"]] == [2, 3]
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 15))
        assert [e["seq"] for e in get_events(server, until=iso).json()["events"]] == [1, 2]
        assert get_events(server, stream="").json() == {"events": events}  # empty: any

        packed = httpx.get(
            f"{server.http}/v1/events",
            headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/msgpack"},
        )
        assert msgpack.unpackb(packed.content)["events"][0]["time"] == events[0]["time"]  # not cut to float32

        for params, name in [
            ({"limit": "0"}, "limit"),
            ({"limit": "1001"}, "limit"),
            ({"since": "yesterday"}, "since"),
            ({"until": str(int(now * 1000))}, "until"),  # milliseconds, not seconds
            ({"since": "2026-02-30T00:00:00Z"}, "since"),
            ({"modality": "video"}, "modality"),
        ]:
            code, message = error_code(get_events(server, **params), 400)
            assert code == "bad_field" and f"'{name}'" in message, params

        server.app.state.runtime.event_log = None  # as with --data-dir ''
        code, message = error_code(get_events(server), 404)
        assert code == "not_found" and "--data-dir" in message


def test_instants_in_seconds_and_iso_8601():
    assert parse_instant("since", "1795528931.25") == T0 + 0.25
    for text in ("2026-11-24T14:02:11Z", "2026-11-24T14:02:11", "2026-11-24T15:02:11+01:00",
                 "2026-11-24T15:02:11 01:00", "2026-11-24T08:32:11-0530"):  # fmt: skip
        assert parse_instant("since", text) == T0, text
    assert parse_instant("since", "2026-11-24") == T0 - (14 * 3600 + 2 * 60 + 11)
    assert parse_instant("since", "2024-02-29T00:00:00.5Z") == 1_709_164_800.5
