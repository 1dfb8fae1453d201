"""What the events' calibration keeps when labels change, and what noise it lets through: figures, no verdicts.

For docs/events.md. Frames of ``samples/slideshow.mp4`` (and a steady picture with camera-like noise) go
through the image model; each frame is scored against a label file and against the same file with many
labels added. Printed per scoring: how much one label's score moves when the others change, and how many
events the defaults give on a steady scene and on the slideshow.

    python -m benchmarks.events_calibration [--image-model local-dir:/tmp/sm/image]
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from server.cpu import cpu_info
from server.encoders import Encoder, build_encoder, model_specs
from server.events import Calibration, Resolved, StreamEvents
from server.labels import DEFAULT_TEMPLATES, parse_label_text
from server.scoring import softmax_scores
from server.settings import Settings

REPO = Path(__file__).resolve().parent.parent
FPS = 10.0  # the stream time given to the events: frames as a webcam script sends them


def slideshow_frames() -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(REPO / "samples" / "slideshow.mp4"))
    frames: list[np.ndarray] = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))


def steady_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    """One picture as a still camera sends it: sensor noise, then JPEG at quality 80."""
    rng = np.random.default_rng(seed)
    picture = np.asarray(Image.open(REPO / "samples" / "coffee.jpg").convert("RGB").resize((640, 480)), np.float32)
    out = []
    for _ in range(count):
        noisy = np.clip(picture + rng.normal(0, 3, picture.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, format="JPEG", quality=80)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return out


def label_matrix(encoder: Encoder, names: list[str]) -> np.ndarray:
    parsed = parse_label_text("\n".join(names), DEFAULT_TEMPLATES["image"])
    embeddings = encoder.encode_text([label.prompts[0] for label in parsed.labels])
    return embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)


def embed(encoder: Encoder, frames: list[np.ndarray]) -> np.ndarray:
    rows = [
        encoder.encode(encoder.prepare([encoder.prepare_one(f) for f in frames[i : i + 8]]))
        for i in range(0, len(frames), 8)
    ]
    return np.concatenate(rows)


def count_events(
    cosines: np.ndarray, names: tuple[str, ...], defaults: Resolved, calibration: Calibration | None = None
) -> int:
    events = StreamEvents(calibration or Calibration(), defaults)
    total = 0
    for i, row in enumerate(cosines):
        total += sum(1 for d in events.update(i / FPS, names, row) if d.state == "start")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-model", default=None, help="default: random-weight ViT-B-32 written here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model = args.image_model
    if model is None:
        from server.devmodels import write_open_clip

        folder = Path(tempfile.mkdtemp()) / "image"
        write_open_clip(folder)
        model = f"local-dir:{folder}"
    settings = Settings(image_model=model, no_audio=True, backend="torch", precision="fp32")
    encoder = build_encoder(model_specs(settings)[0])
    info = cpu_info()
    print(f"# CPU: {info.get('model')}; flags {info.get('flags')}; model {encoder.name}")

    base = [line.split("#")[0].strip() for line in (REPO / "labels" / "image.txt").read_text().splitlines()]
    base = [name for name in base if name and not name.startswith("@")]
    words = "object thing scene item place animal tool toy food sign shape color pattern device vehicle plant room"
    extra = [f"{word} {n}" for n in range(12) for word in words.split()][:200]
    small, large = label_matrix(encoder, base), label_matrix(encoder, base + extra)
    watched = base.index("cat") if "cat" in base else 0
    print(
        f"labels: {len(base)} in the file, {len(base) + len(extra)} with {len(extra)} added; watching {base[watched]!r}"
    )

    slideshow = embed(encoder, slideshow_frames())
    steady = embed(encoder, steady_frames(300))
    scale = encoder.scoring.scale
    for name, frames in (("slideshow", slideshow), ("steady scene", steady)):
        cos_small, cos_large = frames @ small.T, frames @ large.T
        soft_small = softmax_scores(cos_small, scale)[:, watched]
        soft_large = softmax_scores(cos_large, scale)[:, watched]
        change = np.abs(soft_large - soft_small) / np.maximum(soft_small, 1e-12)
        print(f"\n{name}: {len(frames)} frames")
        print(
            f"  softmax score of {base[watched]!r}: median relative change when labels are added "
            f"{np.median(change):.1%}"
        )
        print("  raw cosine and calibrated z: unchanged by construction (each label against its own baseline)")
        print(f"  frame-to-frame cosine spread of {base[watched]!r}: std {cos_small[:, watched].std():.4f}")
        defaults = Resolved(4.0, 2.0, 1.0, 2.0)
        names_small = tuple(base)
        names_large = tuple(base + extra)
        print(
            f"  event starts with the defaults (start 4, end 2, min 1 s, hold 2 s): "
            f"{count_events(cos_small, names_small, defaults)} over {len(base)} labels, "
            f"{count_events(cos_large, names_large, defaults)} over {len(base) + len(extra)}; "
            f"without the spread floor ({Calibration().min_std}): "
            f"{count_events(cos_small, names_small, defaults, Calibration(min_std=1e-9))} over {len(base)}"
        )


if __name__ == "__main__":
    main()
