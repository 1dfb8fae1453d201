"""``sensorium models``: the catalog, what is cached, download sizes offline and from a hub that answers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import constants

from server import catalog
from server.catalog import Entry

SENSORIUM = shutil.which("sensorium") or str(Path(sys.executable).parent / "sensorium")
DEFAULT_IMAGE_REPO = "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"
REVISION = "0123456789abcdef0123456789abcdef01234567"
# Published parameter counts of two architectures, as their float32 checkpoints hold them.
VIT_B_32_PARAMETERS = 151_277_313
LARGER_CLAP_PARAMETERS = 193_913_882


def cache_snapshot(hf_home: Path, repo: str, files: dict[str, bytes]) -> None:
    """A repo in the hub cache as huggingface_hub lays it out: blobs, a snapshot of links to them, refs/main."""
    root = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (root / "blobs").mkdir()
    for name, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(REVISION)


def models_command(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``sensorium models`` as a user runs it, with the hub cache and home of this test, never the machine's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    clean.update(HF_HOME=str(tmp_path / "hf-home"), HOME=str(tmp_path / "home"), **env)
    return subprocess.run(
        [SENSORIUM, "models", *args], env=clean, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL
    )


def by_model(document: dict[str, Any]) -> dict[tuple[str, str | None], dict[str, Any]]:
    return {(model["model"], model["pretrained"]): model for model in document["models"]}


CLAP_FILES = {"config.json": b'{"model_type": "clap"}', "model.safetensors": b"\0" * 4096, "vocab.json": b"{}"}


def test_offline_the_cached_model_shows_as_cached_and_the_others_get_estimates(tmp_path):
    cache_snapshot(tmp_path / "hf-home", "laion/clap-htsat-unfused", CLAP_FILES)
    done = models_command(tmp_path, "--json", HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["offline"] is True and document["cache"] == str(tmp_path / "hf-home" / "hub")
    models = by_model(document)
    clap = models["laion/clap-htsat-unfused", None]
    assert clap["cached"] and clap["default"] and clap["size_source"] == "cache"
    assert clap["size_bytes"] == sum(len(data) for data in CLAP_FILES.values())
    others = [model for key, model in models.items() if key != ("laion/clap-htsat-unfused", None)]
    assert others and not any(model["cached"] for model in others)
    assert all(model["size_source"] == "estimate" and model["size_bytes"] > 0 for model in others)
    assert models["ViT-B-32", "datacomp_xl_s13b_b90k"]["size_bytes"] == VIT_B_32_PARAMETERS * 4
    assert models["laion/larger_clap_general", None]["size_bytes"] == LARGER_CLAP_PARAMETERS * 4
    defaults = [(m["modality"], m["flags"]) for m in document["models"] if m["default"]]
    assert defaults == [
        ("image", ["--image-model", "ViT-B-32", "--image-pretrained", "datacomp_xl_s13b_b90k"]),
        ("audio", ["--audio-model", "laion/clap-htsat-unfused"]),
    ]
    assert all(model["loadable"] for model in document["models"])  # the default list: what the server loads
    siglip2 = models["ViT-B-16-SigLIP2", "webli"]
    assert (siglip2["family"], siglip2["repo"]) == ("open_clip", "timm/ViT-B-16-SigLIP2")


def test_the_table_marks_the_default_and_says_how_to_serve_each_model(tmp_path):
    cache_snapshot(tmp_path / "hf-home", DEFAULT_IMAGE_REPO, {"open_clip_model.safetensors": b"\0" * 512})
    done = models_command(tmp_path, HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    default_image = next(line for line in lines if line.startswith("* open_clip"))
    serve = ["--image-model", "ViT-B-32", "--image-pretrained", "datacomp_xl_s13b_b90k"]
    assert default_image.split()[2:] == ["512", "B", "yes", *serve]
    default_audio = next(line for line in lines if line.startswith("* clap"))
    assert default_audio.split()[2].startswith("~") and default_audio.split()[4] == "no"
    assert default_audio.endswith("--audio-model laion/clap-htsat-unfused")
    assert "~ is an estimate" in done.stdout and "offline" in done.stdout
    assert "sensorium models --all" in done.stdout and "Traceback" not in done.stderr


def test_cached_shows_only_what_is_here(tmp_path):
    cache_snapshot(tmp_path / "hf-home", "laion/clap-htsat-unfused", CLAP_FILES)
    done = models_command(tmp_path, "--cached", HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr
    listed = [line for line in done.stdout.splitlines() if "--image-model" in line or "--audio-model" in line]
    assert listed == [next(line for line in listed if "laion/clap-htsat-unfused" in line)]
    empty = models_command(tmp_path / "elsewhere", "--cached", HF_HUB_OFFLINE="1")
    assert empty.returncode == 0 and "no model of the catalog is in the local cache" in empty.stdout


@contextmanager
def fake_hub(listings: dict[str, dict[str, int]]) -> Iterator[str]:
    """An HTTP server answering the hub's model-info API (with file sizes) for these repos, 404 for others."""

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.end_headers()

        def do_GET(self) -> None:
            path = self.path.split("?")[0].removeprefix("/api/models/").split("/revision/")[0]
            files = listings.get(path)
            body = json.dumps(
                {"id": path, "siblings": [{"rfilename": name, "size": size} for name, size in (files or {}).items()]}
            ).encode()
            self.send_response(200 if files is not None else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_sizes_come_from_the_hub_when_it_answers(tmp_path):
    clap = {
        "config.json": 4_000,
        "model.safetensors": 614_000_000,
        "pytorch_model.bin": 615_000_000,  # not fetched: from_pretrained takes the safetensors
        "flax_model.msgpack": 600_000_000,  # not fetched by torch code
        "vocab.json": 800_000,
        "merges.txt": 450_000,
    }
    image = {"open_clip_model.safetensors": 605_100_000, "open_clip_pytorch_model.bin": 605_200_000}
    with fake_hub({"laion/clap-htsat-unfused": clap, DEFAULT_IMAGE_REPO: image}) as endpoint:
        done = models_command(tmp_path, "--json", HF_ENDPOINT=endpoint)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["offline"] is False
    models = by_model(document)
    assert models["laion/clap-htsat-unfused", None]["size_bytes"] == 4_000 + 614_000_000 + 800_000 + 450_000
    assert models["ViT-B-32", "datacomp_xl_s13b_b90k"]["size_bytes"] == 605_100_000
    assert {
        models[key]["size_source"]
        for key in [("laion/clap-htsat-unfused", None), ("ViT-B-32", "datacomp_xl_s13b_b90k")]
    } == {"hub"}
    unknown_to_the_hub = models["ViT-B-32", "openai"]
    assert unknown_to_the_hub["size_source"] == "estimate" and unknown_to_the_hub["size_bytes"] > 0


# --- the catalog's parts, in this process -----------------------------------------------


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_a_transformers_model_needs_its_config_as_well_as_its_weights(hub_cache):
    entry = next(e for e in catalog.catalog() if e.model == "laion/larger_clap_music")
    cache_snapshot(hub_cache, entry.model, {"model.safetensors": b"\0" * 8})
    assert not catalog.cached(entry)


def test_open_clip_weights_fetched_by_url_count_as_cached(hub_cache):
    entry = catalog.open_clip_entry("ViT-B-32", "openai")
    assert entry.url and not catalog.cached(entry)
    folder = hub_cache / "home" / ".cache" / "clip"
    folder.mkdir(parents=True)
    (folder / os.path.basename(entry.url)).write_bytes(b"\0" * 100)
    assert catalog.cached(entry)
    assert catalog.size(entry, {}) == catalog.Size(100, "cache")


def test_an_open_clip_tag_whose_hub_entry_names_a_file_is_looked_for_under_that_name():
    entry = catalog.open_clip_entry("ViTamin-S", "datacomp1b")
    assert (entry.repo, entry.weights) == ("jienengchen/ViTamin-S", ("pytorch_model.safetensors", "pytorch_model.bin"))
    listing = {"jienengchen/ViTamin-S": {"pytorch_model.bin": 250_000_000, "README.md": 5}}
    assert catalog.size(entry, listing) == catalog.Size(250_000_000, "hub")
    with pytest.raises(ValueError, match="no pretrained tag 'nope'"):
        catalog.open_clip_entry("ViT-B-32", "nope")


def test_every_tag_is_listed_once_and_laion_clap_checkpoints_come_from_their_repo():
    import open_clip

    entries = catalog.catalog(every_open_clip_tag=True)
    tags = [(e.model, e.pretrained) for e in entries if e.family == "open_clip"]
    assert sorted(tags) == sorted(open_clip.list_pretrained()) and len(set(tags)) == len(tags)
    laion = [e for e in entries if e.family == "laion_clap"]
    assert len(laion) == 7 and {e.repo for e in laion} == {"lukewys/laion_clap"}
    assert all(e.model == f"laion-clap:{e.weights[0]}" for e in laion)


@pytest.mark.parametrize(
    ("count", "text"),
    [(0, "0 B"), (999, "999 B"), (2048, "2.05 kB"), (605_100_000, "605 MB"), (1_710_000_000, "1.71 GB")],
)
def test_sizes_read_as_people_write_them(count, text):
    assert catalog.human_bytes(count) == text
    assert catalog.Size(count, "estimate").text() == "~" + text


def test_an_entry_of_a_family_without_a_backend_is_not_loadable():
    entry = Entry("audio", "no-such-family", "x", None, "clap-htsat-tiny", None, ())
    assert not entry.loadable and catalog.size(entry, {}).source == "estimate"


def test_serve_s_check_finds_a_tag_whose_hub_entry_names_a_file(tmp_path, monkeypatch):
    """open_clip's table gives some tags as 'org/repo/file.bin' (ViTamin): serve's check once took that whole string
    for the repo and called the cached weights missing."""
    from huggingface_hub import constants

    from server import clip, hub
    from server.encoders import ModelSpec

    cache_snapshot(tmp_path, "jienengchen/ViTamin-S", {"pytorch_model.bin": b"weights"})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "go_offline_unless_hub_reachable", lambda: None)
    assert clip.missing(ModelSpec("image", "ViTamin-S", "datacomp1b")) is None
    assert "not in the local cache" in str(clip.missing(ModelSpec("image", "ViTamin-B", "datacomp1b")))
