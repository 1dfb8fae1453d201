"""Editing label files while a client streams: the set changes within seconds, or the old one stays."""

import asyncio
import os
import shutil
import time
from dataclasses import replace

import pytest

from server.events import EventThresholds

from .helpers import connect, frame, live_server, receive

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


# --- a labels directory ------------------------------------------------------------------------------


@pytest.fixture
def directory_server(settings, label_dir):
    folder = label_dir / "image.d"
    folder.mkdir()
    (folder / "animals.txt").write_text("dog\ncat\n")
    (folder / "vehicles.txt").write_text("@events start=4\ncar\n")
    with live_server(replace(settings, image_labels=folder)) as running:
        yield running, folder


def test_a_labels_directory_reloads_when_its_files_change(directory_server):
    server, folder = directory_server
    source = server.app.state.runtime.label_sources["image"]
    assert source.current.groups == ("animals", "animals", "vehicles")
    assert source.current.group_thresholds == {"vehicles": EventThresholds(start=4.0)}

    async def scenario():
        ws = await connect(server)
        (folder / "birds.txt").write_text("owl\nhawk [start=5]\n")  # a new file: a new group
        event, _, _ = await stream_until(ws, lambda m: is_labels(m) and m["count"] == 5)
        current = source.current
        assert current.version == event["version"]
        assert current.names == ("dog", "cat", "owl", "hawk", "car")  # files in name order
        assert current.groups == ("animals", "animals", "birds", "birds", "vehicles")
        assert current.thresholds[3] == EventThresholds(start=5.0)
        result, _, _ = await stream_until(
            ws, lambda m: m["type"] == "result" and m["labels_version"] == event["version"]
        )
        assert {t["label"] for t in result["top"]} == {"dog", "cat", "car", "owl", "hawk"}
        good = event["version"]

        (folder / "vehicles.txt").write_text("@events start=4\ncar [start=1 end=2]\n")  # end above start
        error, _, _ = await stream_until(ws, is_labels_error)
        assert "vehicles.txt: line 2" in error["message"] and f"keeping version {good}" in error["message"]
        assert source.current.version == good and source.last_error
        result, _, _ = await stream_until(ws, lambda m: m["type"] == "result")
        assert result["labels_version"] == good

        (folder / "vehicles.txt").write_text("car\nbus\n")  # fixed
        await stream_until(ws, lambda m: is_labels(m) and m["count"] == 6)
        assert source.last_error is None
        assert source.current.group_thresholds == {}  # vehicles' @events went with the edit

        (folder / "birds.txt").unlink()
        await stream_until(ws, lambda m: is_labels(m) and m["count"] == 4)
        assert "birds" not in source.current.groups
        await ws.close()

    asyncio.run(scenario())


def test_a_labels_directory_deleted_and_made_again_is_watched_again(directory_server):
    server, folder = directory_server
    source = server.app.state.runtime.label_sources["image"]

    async def scenario():
        ws = await connect(server)
        shutil.rmtree(folder)
        error, _, _ = await stream_until(ws, is_labels_error)
        assert "not found" in error["message"] and "keeping version 1" in error["message"]
        staged = folder.with_name("staged")
        staged.mkdir()
        (staged / "tools.txt").write_text("hammer\nsaw\n")
        os.rename(staged, folder)  # how deployments swap a directory in
        await stream_until(ws, lambda m: is_labels(m) and m["count"] == 2)
        assert source.current.groups == ("tools", "tools")
        (folder / "tools.txt").write_text("hammer\nsaw\ndrill\n")  # inside the new directory
        await stream_until(ws, lambda m: is_labels(m) and m["count"] == 3)
        assert source.current.names == ("hammer", "saw", "drill")
        await ws.close()

    asyncio.run(scenario())


def test_a_kubernetes_configmap_volume_is_followed_through_every_update(settings, tmp_path):
    """A ConfigMap volume: image.txt -> ..data/image.txt, ..data -> a timestamped directory, which each update
    replaces (a new directory, ..data swapped to it by rename, the old one deleted)."""
    volume = tmp_path / "configmap"
    volume.mkdir()

    def publish(generation: int, text: str) -> None:
        folder = volume / f"..2026_11_24_{generation}"
        folder.mkdir()
        (folder / "image.txt").write_text(text)
        os.symlink(folder.name, volume / "..data_tmp")
        os.replace(volume / "..data_tmp", volume / "..data")
        if generation > 1:
            shutil.rmtree(volume / f"..2026_11_24_{generation - 1}")

    publish(1, "zebra crossing\nfire hydrant\n")
    os.symlink("..data/image.txt", volume / "image.txt")

    async def scenario(running):
        ws = await connect(running)
        await stream_until(ws, lambda m: m["type"] == "result")
        for generation, labels in ((2, {"red car", "blue car"}), (3, {"a cat", "a dog"})):
            publish(generation, "\n".join(sorted(labels)) + "\n")
            result, _, _ = await stream_until(
                ws, lambda m, v=generation: m["type"] == "result" and m["labels_version"] == v
            )
            assert {t["label"] for t in result["top"]} == labels
        await ws.close()

    with live_server(replace(settings, image_labels=volume / "image.txt")) as running:
        asyncio.run(scenario(running))
