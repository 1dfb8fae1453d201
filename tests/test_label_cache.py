"""Label embeddings kept on disk: a restart encodes nothing it encoded before, for the same weights only."""

from pathlib import Path

import httpx
import numpy as np

from server.devmodels import write_open_clip
from server.encoders import ModelSpec, build_encoder
from server.label_cache import EmbeddingCache, embed_label_set
from server.labels import parse_label_text

from .helpers import jpeg, live_server

LABELS = "\n".join(f"thing number {i}" for i in range(50))


def test_restart_encodes_nothing_new(settings):
    with live_server(settings) as first:
        initial = first.app.state.runtime.label_sources["image"].current
        assert initial.new_prompts > 0
    with live_server(settings) as second:
        again = second.app.state.runtime.label_sources["image"].current
        assert again.new_prompts == 0
        np.testing.assert_array_equal(again.matrix, initial.matrix)


def test_cache_is_keyed_by_weights(tmp_path):
    encoders = [
        build_encoder(ModelSpec("image", f"local-dir:{write_open_clip(tmp_path / f'seed{seed}', seed=seed)}"))
        for seed in (0, 1)
    ]
    assert encoders[0].name != encoders[1].name or encoders[0].identity != encoders[1].identity
    assert encoders[0].identity.split(":")[-2] != encoders[1].identity.split(":")[-2]  # weight fingerprints
    parsed = parse_label_text(LABELS, ("a photo of a {}.",))
    folder = tmp_path / "cache"
    embed_label_set(encoders[0], parsed, EmbeddingCache(folder))
    fresh = EmbeddingCache(folder)
    assert fresh.load(encoders[0].identity) == 50
    assert fresh.load(encoders[1].identity) == 0
    new = embed_label_set(encoders[0], parsed, fresh).new_prompts
    assert new == 0


def test_unreadable_cache_file_is_ignored(tmp_path, image_model):
    encoder = build_encoder(ModelSpec("image", image_model))
    cache = EmbeddingCache(tmp_path)
    embed_label_set(encoder, parse_label_text("dog\ncat\n", ("{}",)), cache)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"garbage")
    assert EmbeddingCache(tmp_path).load(encoder.identity) == 0


def test_request_labels_stay_off_disk_and_file_labels_survive_a_restart(settings):
    """Ad-hoc labels and texts of HTTP requests once went into the disk cache forever, each new prompt
    rewriting the whole file."""
    cache_dir = Path(settings.label_cache)
    with live_server(settings) as server:
        files = {p: p.stat().st_mtime_ns for p in cache_dir.glob("*.npz")}
        for n in range(3):
            reply = httpx.post(
                f"{server.http}/v1/classify/image",
                files={"file": ("a.jpg", jpeg(), "image/jpeg")},
                data={"labels": [f"request label {n}", "another request label"]},
            )
            assert reply.status_code == 200, reply.text
            body = {"texts": [f"a request text {n}"], "modality": "audio"}
            assert httpx.post(f"{server.http}/v1/embed/text", json=body).status_code == 200
        assert {p: p.stat().st_mtime_ns for p in cache_dir.glob("*.npz")} == files  # not rewritten
    for saved in cache_dir.glob("*.npz"):
        with np.load(saved) as contents:
            assert not [p for p in contents["prompts"].tolist() if "request" in p]
    with live_server(settings) as again:
        assert again.app.state.runtime.label_sources["image"].current.new_prompts == 0


def test_transient_prompts_are_bounded():
    cache = EmbeddingCache(None, transient_limit=3)
    rows = np.eye(5, dtype=np.float32)
    cache.store("m", [f"p{i}" for i in range(5)], rows, keep=False)
    assert set(cache.lookup("m", [f"p{i}" for i in range(5)])) == {"p2", "p3", "p4"}
