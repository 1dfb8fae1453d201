"""SigLIP through open_clip (a local-dir: CustomTextCLIP with a learned logit bias), and SigLIP-scored streams'
events, which follow raw cosines and so come out as a CLIP-scored stream's would."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import websockets
from PIL import Image

from server.devmodels import write_open_clip, write_siglip
from server.encoders import Encoder, ModelSpec, build_encoder, missing_model
from server.scoring import Scores, Scoring
from server.settings import Settings
from server.stream_events import EventConsumer
from server.worker import StreamKey

from .helpers import EAGER_EVENTS as EAGER
from .helpers import NO_OPENVINO, REPO, frame, live_server, openvino_installed, pack, receive

PICTURE_FILES = sorted((REPO / "samples").glob("*.jpg"))
PROMPTS = ["a photo of a dog.", "a rocket on its launch pad", "!", "x " * 100, "A CAT."]


@pytest.fixture(scope="module")
def open_clip_siglip(tmp_path_factory: pytest.TempPathFactory) -> Encoder:
    folder = write_open_clip(tmp_path_factory.mktemp("oc-siglip") / "model", "tiny-siglip")
    return build_encoder(ModelSpec("image", f"local-dir:{folder}"))


@pytest.fixture(scope="module")
def siglip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_siglip(tmp_path_factory.mktemp("siglip") / "model")


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    out = [Image.open(path).convert("RGB") for path in PICTURE_FILES]
    rng = np.random.default_rng(2)
    for height, width in [(480, 640), (640, 480), (225, 1000), (100, 90)]:
        coarse = rng.integers(0, 255, (height // 8 + 1, width // 8 + 1, 3), np.uint8)
        out.append(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    return out


def test_open_clip_siglip_scores_are_a_sigmoid_of_its_own_outputs(open_clip_siglip, pictures):
    encoder = open_clip_siglip
    model = encoder.model
    assert type(model).__name__ == "CustomTextCLIP" and model.logit_bias is not None
    with torch.inference_mode():
        images = torch.stack([encoder.preprocess(p) for p in pictures[:3]])
        image_features, text_features, scale, bias = model(images, encoder.tokenizer(PROMPTS))
        expected = torch.sigmoid(scale * image_features @ text_features.T + bias).numpy()
    assert encoder.scoring == Scoring("sigmoid", float(scale), float(bias.detach()))
    similarity = encoder.encode(images) @ encoder.encode_text(PROMPTS).T
    np.testing.assert_allclose(encoder.scoring.scores(similarity), expected, rtol=1e-4, atol=1e-9)


def test_a_plain_open_clip_folder_is_a_local_dir(open_clip_siglip):
    folder = open_clip_siglip.name.removeprefix("local-dir:")
    spec = ModelSpec("image", folder, pretrained="laion2b_s34b_b79k")  # the settings' default tag: not used
    assert spec.family == "open_clip" and missing_model(spec) is None
    encoder = build_encoder(spec)
    assert encoder.name == open_clip_siglip.name and encoder.identity == open_clip_siglip.identity


def test_open_clip_siglip_text_takes_the_stock_path(open_clip_siglip):
    encoder = open_clip_siglip
    assert not encoder._can_cut_tokens()  # bidirectional, pooled at the last position: padding matters
    prompts = [f"a photo of thing number {i}" for i in range(300)]  # more than one chunk
    with torch.inference_mode():
        expected = encoder.model.encode_text(encoder.tokenizer(prompts), normalize=True).numpy()
    assert np.abs(encoder.encode_text(prompts) - expected).max() < 1e-5


def test_open_clip_siglip_preprocessing_matches_its_transform(open_clip_siglip, pictures):
    encoder = open_clip_siglip
    assert (encoder.spec.resize_mode, encoder.spec.mean, encoder.spec.std) == ("squash", (0.5,) * 3, (0.5,) * 3)
    with torch.inference_mode():
        reference = encoder.model.encode_image(torch.stack([encoder.preprocess(p) for p in pictures]), normalize=True)
    fast = encoder.encode(encoder.prepare([np.asarray(p) for p in pictures]))
    assert (fast * reference.numpy()).sum(-1).min() >= 0.999


@pytest.mark.skipif(not openvino_installed(), reason=NO_OPENVINO)
def test_open_clip_siglip_runs_on_openvino(open_clip_siglip, pictures):
    converted = build_encoder(ModelSpec("image", open_clip_siglip.name, backend="openvino"))
    assert converted.scoring == open_clip_siglip.scoring
    arrays = [np.asarray(p) for p in pictures]
    expected = open_clip_siglip.encode(open_clip_siglip.prepare(arrays))
    assert (converted.encode(converted.prepare(arrays)) * expected).sum(-1).min() >= 0.999


def test_events_follow_cosines_whatever_the_scoring(open_clip_siglip, pictures):
    """The same stream of SigLIP cosines, scored as SigLIP scores it and as a CLIP softmax would, gives the
    same events: events calibrate each label's raw cosine against the stream's own baseline."""
    encoder = open_clip_siglip
    label_set = _LabelSet(tuple(PROMPTS), encoder.encode_text(PROMPTS))
    each = encoder.encode(encoder.prepare([np.asarray(p) for p in pictures])) @ label_set.matrix.T
    # A scene, then the one in which some label's cosine rises most (random weights: no label means anything).
    before, after = max(((a, b) for a in range(len(each)) for b in range(len(each))), key=lambda ab: _rise(each, *ab))
    assert _rise(each, before, after) > 0.05
    similarity = np.stack([each[before]] * 20 + [each[after]] * 10)
    settings = Settings(**EAGER)  # type: ignore[arg-type]
    events = {}
    for scoring in (encoder.scoring, Scoring("softmax", encoder.scoring.scale)):
        consumer, out = EventConsumer(StreamKey(1, "image", "yard"), settings), []
        for seq, row in enumerate(similarity):
            out += consumer.consume(seq, float(seq), seq * 0.5, Scores(label_set, row, scoring.scores(row[None])[0]))
        events[scoring.kind] = [(e["label"], e["state"], e["seq"], e["score"]) for e in out + consumer.close()]
    assert events["sigmoid"] == events["softmax"]
    assert any(state == "start" for _, state, _, _ in events["sigmoid"]), "the scene change starts events"


def _rise(similarity: np.ndarray, before: int, after: int) -> float:
    return float((similarity[after] - similarity[before]).max())


@dataclasses.dataclass(frozen=True)
class _LabelSet:
    """What the events consumer reads of a label set (server/labelsets.py LabelSet), without a label file."""

    names: tuple[str, ...]
    matrix: np.ndarray

    @property
    def groups(self) -> tuple[None, ...]:
        return (None,) * len(self.names)

    @property
    def thresholds(self) -> tuple[None, ...]:
        return (None,) * len(self.names)

    @property
    def group_thresholds(self) -> dict[str, Any]:
        return {}


def test_a_siglip_served_stream_gives_events(settings, siglip_folder):
    """As tests/test_watch.py's CLIP stream: a steady scene, another one, the stream's end."""
    served = dataclasses.replace(settings, image_model=str(siglip_folder), no_audio=True, **EAGER)
    cat, rocket = ((REPO / "samples" / name).read_bytes() for name in ("cat.jpg", "rocket.jpg"))

    async def scenario(server: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ws = await websockets.connect(server.ws, max_size=None)
        welcome = await receive(ws)
        messages: list[dict[str, Any]] = []
        for seq in range(1, 31):
            await ws.send(frame(seq, cat if seq <= 20 else rocket, stream="yard"))
            messages.append(await receive(ws))
            while not (messages[-1]["type"] == "result" and messages[-1]["seq"] == seq):
                messages.append(await receive(ws))
        await ws.send(pack({"type": "end", "modality": "image", "stream": "yard"}))
        while messages[-1]["type"] != "ended":
            messages.append(await receive(ws))
        await ws.close()
        return welcome, messages

    with live_server(served) as server:
        welcome, messages = asyncio.run(scenario(server))
    assert welcome["modalities"]["image"]["scoring"]["kind"] == "sigmoid"
    events = [m for m in messages if m["type"] == "event"]
    starts = [e for e in events if e["state"] == "start"]
    assert starts and all(e["seq"] > 20 for e in starts), "events start with the new scene, not before"
    assert {e["label"] for e in starts} == {e["label"] for e in events if e["state"] == "end"}
