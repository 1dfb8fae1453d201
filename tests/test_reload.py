"""Editing label files while a client streams: the set changes within seconds, or the old one stays."""

import asyncio
import os
import time

from .helpers import connect, frame, receive

RELOAD_WITHIN_S = 2.0


async def stream_until(ws, predicate, timeout: float = RELOAD_WITHIN_S + 3):
    """Keep streaming frames; return (first message matching, seconds it took, results seen)."""
    started = time.monotonic()
    results = []
    seq = 0
    while time.monotonic() - started < timeout:
        await ws.send(frame(seq))
        seq += 1
        message = await receive(ws)
        if message["type"] == "result":
            results.append(message)
        if predicate(message):
            return message, time.monotonic() - started, results
    raise TimeoutError("the expected message never came")


def is_labels(message):
    return message["type"] == "labels" and message["modality"] == "image"


def is_labels_error(message):
    return message["type"] == "labels_error" and message["modality"] == "image"


def test_editing_the_file_changes_results_within_two_seconds(server, label_dir):
    path = label_dir / "image.txt"

    async def scenario():
        ws = await connect(server)
        await stream_until(ws, lambda m: m["type"] == "result")
        path.write_text("zebra crossing\nfire hydrant\n")
        result, took, _ = await stream_until(ws, lambda m: m["type"] == "result" and m["labels_version"] == 2)
        assert took < RELOAD_WITHIN_S
        assert {t["label"] for t in result["top"]} == {"zebra crossing", "fire hydrant"}
        await ws.close()

    asyncio.run(scenario())


def test_save_by_rename_and_truncate_then_write(server, label_dir):
    path = label_dir / "image.txt"

    async def scenario():
        ws = await connect(server)
        temp = label_dir / ".image.txt.swp"
        temp.write_text("red car\nblue car\nbus\n")
        os.replace(temp, path)  # how vim and many editors save
        event, _, _ = await stream_until(ws, is_labels)
        assert (event["version"], event["count"]) == (2, 3)
        with open(path, "w") as f:  # truncate, then write a moment later
            f.flush()
            time.sleep(0.02)
            f.write("tram\n")
        event, _, _ = await stream_until(ws, lambda m: is_labels(m) and m["count"] == 1)
        assert event["version"] >= 3
        result, _, _ = await stream_until(
            ws, lambda m: m["type"] == "result" and m["labels_version"] == event["version"]
        )
        assert [t["label"] for t in result["top"]] == ["tram"]
        await ws.close()

    asyncio.run(scenario())


def test_bad_edits_keep_the_last_good_set_and_are_reported(server, label_dir):
    path = label_dir / "image.txt"
    runtime = server.app.state.runtime

    async def scenario():
        ws = await connect(server)
        path.write_text("owl\nhawk\n")
        await stream_until(ws, lambda m: m["type"] == "result" and m["labels_version"] == 2)
        for bad, fragment in [
            (b"owl\n\xff\xfe\n", "UTF-8"),
            (b"", "no labels"),
            (b"@template nothing to fill\nowl\n", "exactly one"),
        ]:
            path.write_bytes(bad)
            error, _, _ = await stream_until(ws, is_labels_error)
            assert fragment in error["message"] and "keeping version 2" in error["message"]
            result, _, _ = await stream_until(ws, lambda m: m["type"] == "result")
            assert result["labels_version"] == 2
            assert {t["label"] for t in result["top"]} == {"owl", "hawk"}
        path.unlink()
        error, _, _ = await stream_until(ws, is_labels_error)
        assert "not found" in error["message"]
        assert runtime.label_sources["image"].last_error
        path.write_text("eagle\n")  # recreated: back in service
        event, _, _ = await stream_until(ws, is_labels)
        assert (event["version"], event["count"]) == (3, 1)
        await ws.close()

    asyncio.run(scenario())


def test_reload_encodes_only_new_prompts(server, label_dir):
    path = label_dir / "audio.txt"
    source = server.app.state.runtime.label_sources["audio"]
    original = path.read_text()

    async def scenario():
        ws = await connect(server)
        path.write_text(original + "\ntheremin\n")
        deadline = time.monotonic() + 5
        while (source.current.version < 2) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await ws.close()

    asyncio.run(scenario())
    assert source.current.version == 2
    assert source.current.new_prompts == 1
    assert source.current.names[-1] == "theremin"
