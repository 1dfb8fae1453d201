"""What the server needs of a model, whatever its architecture, and the factory that loads one."""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

import numpy as np

from .protocol import Modality
from .settings import Settings


class Encoder(Protocol):
    """A contrastive model: inputs and prompts to L2-normalized embeddings in one space."""

    modality: Modality
    name: str  # what clients are shown
    identity: str  # what text embeddings of this model are cached under: name, weights, precision
    logit_scale: float
    device: str

    def prepare(self, inputs: list[Any]) -> Any:
        """Preprocess a batch of decoded inputs (CPU work, timed as preprocess)."""

    def encode(self, prepared: Any) -> np.ndarray:
        """Embed a prepared batch: (batch, dim) float32, unit rows."""

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        """Embed prompts: (len(prompts), dim) float32, unit rows."""


def weights_fingerprint(model: Any) -> str:
    """A short hash of a model's weights (a strided sample of every tensor): same name, other weights,
    other fingerprint, at a cost of milliseconds rather than hashing gigabytes."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu().numpy()
        digest.update(f"{name}{tuple(tensor.shape)}".encode())
        digest.update(sample.tobytes())
    return digest.hexdigest()[:16]


def resolve_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return choice


def load_encoders(settings: Settings) -> dict[Modality, Encoder]:
    """Load every model the settings ask for (blocking; minutes on a first download)."""
    from . import hub

    device = resolve_device(settings.device)
    encoders: dict[Modality, Encoder] = {}
    if settings.serves_image:
        from .clip import ClipEncoder
        from .clip import needs_hub as image_needs_hub

        if image_needs_hub(settings.image_model, settings.image_pretrained):
            hub.go_offline_unless_hub_reachable()
        encoders["image"] = ClipEncoder.load(settings.image_model, settings.image_pretrained, device)
    if settings.serves_audio:
        from .clap import ClapEncoder
        from .clap import needs_hub as audio_needs_hub

        if audio_needs_hub(settings.audio_model):
            hub.go_offline_unless_hub_reachable()
        encoders["audio"] = ClapEncoder.load(settings.audio_model, device)
    return encoders
