"""What the server needs of a model, whatever its architecture or backend, and the one factory that builds it.

``serve``, ``bench`` and the HTTP API all get their encoders from ``build_encoder``, keyed by modality and
backend. A backend is a module with ``load(spec) -> Encoder`` and ``missing(spec) -> str | None`` (why it cannot be
loaded from what is here, checked before anything loads), imported only when chosen, so
an optional backend's packages are needed only by those who use it.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from .protocol import Modality
from .scoring import Scoring
from .settings import Settings


class Encoder(Protocol):
    """A contrastive model: inputs and prompts to L2-normalized embeddings in one space.

    Everything the server reads of a model is declared here; nothing is looked up with ``getattr``.
    """

    modality: Modality
    name: str  # what clients are shown
    identity: str  # what text embeddings of this model are cached under: family, name, weights, precision
    scoring: Scoring  # how the model's family turns cosines into scores, with its learned constants
    device: str  # "cpu", "cuda", ...
    backend: str  # "torch", ...
    precision: str  # "fp32", "fp16", "bf16"
    input_side: int | None  # images: the model's input side, for reduced-scale JPEG decoding; audio: None
    sample_rate: int | None  # audio: the rate the model's features expect; images: None

    def prepare_one(self, item: Any) -> Any:
        """Preprocess one decoded input, on any thread, as it arrives; ``prepare`` takes the result in its
        place, so the model's own thread only stacks and encodes (the next inputs are preprocessed meanwhile)."""

    def prepare(self, inputs: list[Any]) -> Any:
        """A batch of decoded inputs, or of ``prepare_one`` results, to the model's input (timed as preprocess)."""

    def encode(self, prepared: Any) -> np.ndarray:
        """Embed a prepared batch: (batch, dim) float32, unit rows."""

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        """Embed prompts: (len(prompts), dim) float32, unit rows."""

    def mel_stream(self, max_window_samples: int | None = None) -> Any:
        """A per-stream front end (server/melspec.py ``MelStream``) whose ``features`` ``prepare`` takes in place
        of a raw audio window, computed as audio arrives; None where it does not apply (images too)."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model to build, where, and with which backend."""

    modality: Modality
    model: str  # see model_family: an open_clip name, hf-hub:, local-dir:, a hub id, a folder, a .pt file
    pretrained: str | None = None  # image: a pretrained tag or weights file for a built-in architecture
    device: str = "cpu"
    backend: str = "torch"  # resolved: never "auto" here
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16, never "auto" here

    @property
    def family(self) -> str:
        return model_family(self.modality, self.model)


def model_family(modality: Modality, model: str) -> str:
    """Which library's checkpoint format ``--image-model`` / ``--audio-model`` names, from its spelling alone.

    Images: ``local-dir:``, ``hf-hub:`` and built-in names (``ViT-B-32``) are open_clip; a hub id
    (``openai/clip-vit-base-patch32``) or a folder written by ``save_pretrained`` (it has config.json) is
    transformers (CLIP, SigLIP, SigLIP 2). Audio: a ``.pt``/``.ckpt`` file or ``laion-clap:NAME`` is a laion_clap
    training checkpoint; anything else is a transformers CLAP hub id or folder.
    """
    if modality == "audio":
        if model.startswith("laion-clap:") or model.endswith((".pt", ".pth", ".ckpt")):
            return "laion_clap"
        return "clap"
    if model.startswith(("local-dir:", "hf-hub:")):
        return "open_clip"
    if os.path.isdir(model):
        return "open_clip" if os.path.isfile(os.path.join(model, "open_clip_config.json")) else "transformers"
    if "/" in model:
        return "transformers"
    return "open_clip"


# (family, backend) -> the module whose ``load(spec)`` builds that encoder; see model_family.
BACKENDS: dict[tuple[str, str], str] = {
    ("open_clip", "torch"): "server.clip",
    ("clap", "torch"): "server.clap",
    ("transformers", "torch"): "server.hf_clip",
    ("laion_clap", "torch"): "server.laion_clap",
    ("open_clip", "openvino"): "server.openvino_backend",
    ("clap", "openvino"): "server.openvino_backend",
    ("transformers", "openvino"): "server.openvino_backend",
    ("laion_clap", "openvino"): "server.openvino_backend",
}


def build_encoder(spec: ModelSpec) -> Encoder:
    """Load one model (blocking; minutes on a first download)."""
    module = BACKENDS.get((spec.family, spec.backend))
    if module is None:
        raise ValueError(_no_backend(spec))
    encoder: Encoder = importlib.import_module(module).load(spec)
    return encoder


def missing_model(spec: ModelSpec) -> str | None:
    """Why a model cannot be built from what is here and reachable (checked before loading), or None."""
    module = BACKENDS.get((spec.family, spec.backend))
    if module is None:
        return _no_backend(spec)
    problem: str | None = importlib.import_module(module).missing(spec)
    return problem


def _no_backend(spec: ModelSpec) -> str:
    known = ", ".join(sorted(backend for family, backend in BACKENDS if family == spec.family))
    return f"no {spec.backend!r} backend for {spec.family} {spec.modality} models (known: {known})"


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return choice


def model_specs(settings: Settings) -> list[ModelSpec]:
    """The models the settings ask for."""
    # OpenVINO runs on the CPU: "auto" means the CPU there, even on a machine with a GPU.
    device = "cpu" if settings.backend == "openvino" and settings.device == "auto" else resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    specs = []
    if settings.serves_image:
        specs.append(ModelSpec("image", settings.image_model, settings.image_pretrained, device, "torch", precision))
    if settings.serves_audio:
        specs.append(ModelSpec("audio", settings.audio_model, None, device, "torch", precision))
    return [replace(spec, backend=choose_backend(settings.backend, spec)) for spec in specs]


def choose_backend(choice: str, spec: ModelSpec) -> str:
    """``auto``: OpenVINO for a CPU where it is installed and takes the model (measured faster than torch on
    every CPU of this project: docs/performance.md), else torch."""
    if choice != "auto":
        return choice
    if spec.device == "cpu" and missing_model(replace(spec, backend="openvino")) is None:
        return "openvino"
    return "torch"


def resolve_precision(choice: str, device: str) -> str:
    """``auto``: fp16 on CUDA; on a CPU, bf16 where it has bf16 matrix units that a probe finds faster."""
    if choice == "auto":
        from .cpu import cpu_precision

        return "fp16" if device == "cuda" else cpu_precision()
    if choice == "fp16" and device != "cuda":
        raise ValueError("--precision fp16 needs --device cuda (CPUs have no fast fp16 matrix units; try bf16)")
    return choice
