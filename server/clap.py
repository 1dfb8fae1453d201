"""Audio: CLAP through transformers (laion's checkpoints on the hub, or a save_pretrained folder)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from . import hub, melspec
from .encoders import ModelSpec
from .hub import ModelUnavailable, cache_location, hub_is_offline
from .identity import model_identity, torch_fingerprint
from .protocol import Modality
from .scoring import Scoring

TEXT_BATCH = 256


def needs_hub(model_id: str) -> bool:
    return not os.path.isdir(model_id)


def load(spec: ModelSpec) -> ClapEncoder:
    """The factory's entry point (server.encoders.build_encoder) for transformers CLAP on torch."""
    if needs_hub(spec.model):
        hub.go_offline_unless_hub_reachable()
    return ClapEncoder.load(spec.model, spec.device, spec.precision)


def missing(spec: ModelSpec) -> str | None:
    """Why the model cannot be loaded from what is on this machine and reachable, or None when it can."""
    model = spec.model
    needs = "it needs what ClapModel.save_pretrained and ClapProcessor.save_pretrained write"
    problem = hub.folder_or_hub_id_problem("audio model", model, needs)
    if problem or os.path.isdir(model):
        return problem
    hub.go_offline_unless_hub_reachable()
    if hub_is_offline() and not hub.in_cache(model, "config.json"):
        return (
            f"audio model {model!r} is not in the local cache ({cache_location()}) and the hub is offline or "
            "unreachable: point --audio-model at a local folder written by save_pretrained (model and processor)"
        )
    return None


PRECISIONS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
DTYPES = {name: dtype for dtype, name in PRECISIONS.items()}  # --precision to the torch dtype of the weights


class ClapEncoder:
    modality: Modality = "audio"
    backend = "torch"
    input_side: int | None = None

    def __init__(self, model: Any, processor: Any, name: str, device: str, family: str = "clap") -> None:
        self.model = model
        self.processor = processor
        self.name = name
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.precision = PRECISIONS[self.dtype]
        self.identity = model_identity(family, name, torch_fingerprint(model), self.precision)
        self.sample_rate: int | None = int(processor.feature_extractor.sampling_rate)
        # Unfused checkpoints take one mel view; the extractor's "fusion" default makes four and crashes them.
        self.truncation = "fusion" if model.config.audio_config.enable_fusion else "rand_trunc"
        self.scoring = Scoring("softmax", float(model.logit_scale_a.exp().item()))

    @classmethod
    def load(cls, model_id: str, device: str, precision: str = "fp32") -> ClapEncoder:
        from transformers import ClapModel, ClapProcessor

        dtype = DTYPES[precision]
        try:
            processor = ClapProcessor.from_pretrained(model_id)
            model = ClapModel.from_pretrained(model_id, dtype=dtype)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelUnavailable(_explain_failure(model_id, exc)) from exc
        model.to(device).eval()  # type: ignore[arg-type]
        return cls(model, processor, name=model_id, device=device)

    def prepare_one(self, window: np.ndarray) -> np.ndarray:
        """One window's features, as the stock extractor makes them (fused checkpoints: the window as it is)."""
        if self.truncation == "fusion":
            return window
        features = self.processor.feature_extractor(
            [window], sampling_rate=self.sample_rate, truncation=self.truncation, return_tensors="np"
        )
        return np.asarray(features["input_features"][0], dtype=np.float32)

    def prepare(self, inputs: list[np.ndarray]) -> dict[str, torch.Tensor]:
        """Raw windows (1-D samples at sample_rate) and/or precomputed features (mel_stream().features())."""
        precomputed = [index for index, item in enumerate(inputs) if item.ndim > 1]
        if precomputed:
            return self._prepare_precomputed(inputs, precomputed)
        features = dict(
            self.processor.feature_extractor(
                inputs, sampling_rate=self.sample_rate, truncation=self.truncation, return_tensors="pt"
            )
        )
        if self.truncation == "fusion":
            # The extractor marks a random clip "longer" when none is, as laion's training does; laion_clap's
            # inference does not, and the embedding would depend on the batch and the random state.
            longest = self.processor.feature_extractor.nb_max_samples
            features["is_longer"] = torch.tensor([[len(window) > longest] for window in inputs])
        return features

    def _prepare_precomputed(self, inputs: list[np.ndarray], precomputed: list[int]) -> dict[str, torch.Tensor]:
        # What the extractor returns for the batch: raw windows go through it, precomputed items are stacked in.
        shape = melspec.feature_shape(self.processor.feature_extractor)
        if self.truncation == "fusion":
            raise ValueError("precomputed audio features are for unfused CLAP checkpoints only")
        for index in precomputed:
            if inputs[index].shape != shape:
                raise ValueError(f"precomputed audio features of shape {inputs[index].shape}; expected {shape}")
        raw = sorted(set(range(len(inputs))) - set(precomputed))
        features = torch.empty((len(inputs), *shape), dtype=torch.float32)
        is_longer = torch.zeros((len(inputs), 1), dtype=torch.bool)  # rand_trunc: true only past max length
        if raw:
            extracted = self.prepare([inputs[index] for index in raw])
            features[raw] = extracted["input_features"].to(torch.float32)
            is_longer[raw] = extracted["is_longer"].to(torch.bool)
        features[precomputed] = torch.from_numpy(np.stack([inputs[index] for index in precomputed]).astype(np.float32))
        return {"input_features": features, "is_longer": is_longer}

    def mel_stream(self, max_window_samples: int | None = None) -> melspec.MelStream | None:
        """A streaming mel front end for one audio stream, whose features() prepare takes in place of its window.

        None where it does not apply, and the raw window must go to prepare: fused checkpoints ("fusion"
        features), or windows longer than the extractor's max length (it takes a random crop of those).
        """
        return melspec.stream_for(self.processor.feature_extractor, self.truncation, max_window_samples)

    @torch.inference_mode()
    def encode(self, prepared: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = {
            key: value.to(self.device, self.dtype) if value.is_floating_point() else value.to(self.device)
            for key, value in prepared.items()
        }
        return _pooled(self.model.get_audio_features(**inputs)).float().cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        out = np.empty((len(prompts), 0), dtype=np.float32)
        for start in range(0, len(prompts), TEXT_BATCH):
            index = order[start : start + TEXT_BATCH]
            # Pad to the chunk's longest prompt, not to the tokenizer's 77: attention masks make it exact.
            tokens = self.processor.tokenizer(
                [prompts[i] for i in index], padding="longest", truncation=True, return_tensors="pt"
            ).to(self.device)
            chunk = _pooled(self.model.get_text_features(**tokens)).float().cpu().numpy()
            if out.shape[1] == 0:
                out = np.empty((len(prompts), chunk.shape[1]), dtype=np.float32)
            out[index] = chunk
        return out


def _pooled(output: Any) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output is the normalized projection.
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(tensor, dim=-1)


def _explain_failure(model_id: str, exc: Exception) -> str:
    if os.path.isdir(model_id):
        hint = "the folder needs what ClapModel.save_pretrained and ClapProcessor.save_pretrained write"
    elif hub_is_offline():
        hint = (
            f"it is not in the local cache ({cache_location()}) and the hub is offline or unreachable. "
            "Point --audio-model at a local folder written by save_pretrained (model and processor)"
        )
    else:
        hint = "check the hub id (for example laion/clap-htsat-unfused)"
    return f"cannot load audio model {model_id!r}: {hint}. Cause: {exc}"
