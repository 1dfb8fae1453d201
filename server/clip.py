"""Images: CLIP and SigLIP through open_clip (built-in names with a pretrained tag or file, hf-hub:, local-dir:)."""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from open_clip.model import get_model_preprocess_cfg

from . import hub
from .encoders import ModelSpec
from .hub import ModelUnavailable, cache_location, hub_is_offline
from .identity import model_identity, torch_fingerprint
from .preprocess import PreprocessSpec, preprocess
from .protocol import Modality
from .scoring import Scoring

log = logging.getLogger("sensorium.models")

TEXT_BATCH = 256


def needs_hub(model_name: str, pretrained: str | None) -> bool:
    if model_name.startswith("local-dir:"):
        return False
    if model_name.startswith("hf-hub:"):
        return True
    return bool(pretrained) and not os.path.isfile(str(pretrained))


def load(spec: ModelSpec) -> ClipEncoder:
    """The factory's entry point (server.encoders.build_encoder) for open_clip on torch."""
    name = open_clip_name(spec.model)
    if needs_hub(name, spec.pretrained):
        hub.go_offline_unless_hub_reachable()
    return ClipEncoder.load(name, spec.pretrained, spec.device, spec.precision)


def open_clip_name(model: str) -> str:
    """open_clip's spelling of ``--image-model``: a plain folder (model_family sends here those holding
    open_clip_config.json) is a ``local-dir:`` one."""
    return f"local-dir:{model}" if os.path.isdir(model) else model


def missing(spec: ModelSpec) -> str | None:
    """Why the model cannot be loaded from what is on this machine and reachable, or None when it can."""
    name, pretrained = open_clip_name(spec.model), spec.pretrained
    what = f"image model {name!r}" + (f" with pretrained {pretrained!r}" if pretrained else "")
    if name.startswith("local-dir:"):
        folder = name.removeprefix("local-dir:")
        if not os.path.isfile(os.path.join(folder, "open_clip_config.json")):
            return f"{what}: {folder} has no open_clip_config.json (a local-dir: folder needs it and a weights file)"
        return None
    if pretrained and _looks_like_a_path(pretrained) and not os.path.isfile(pretrained):
        return f"{what}: no such weights file {pretrained}"
    if not needs_hub(name, pretrained):
        return None
    hub.go_offline_unless_hub_reachable()
    if not hub_is_offline():
        return None  # it will be downloaded
    if name.startswith("hf-hub:"):
        cached = hub.in_cache(name.removeprefix("hf-hub:"), "open_clip_config.json")
    else:
        from .catalog import cached as in_catalog_cache
        from .catalog import open_clip_entry

        try:
            # open_clip's table names a hub repo, a repo and a file in it, or a URL: the catalog reads all three.
            cached = in_catalog_cache(open_clip_entry(name, pretrained or ""))
        except ValueError:
            return f"{what}: open_clip knows no such pretrained tag (open_clip.list_pretrained() lists them)"
    if cached:
        return None
    return (
        f"{what} is not in the local cache ({cache_location()}) and the hub is offline or unreachable: point "
        "--image-model at a local copy (local-dir:/path/to/folder with open_clip_config.json and the weights), "
        "or keep --image-model and give --image-pretrained /path/to/weights.bin"
    )


def _looks_like_a_path(pretrained: str) -> bool:
    return os.sep in pretrained or pretrained.endswith((".bin", ".pt", ".pth", ".safetensors"))


class ClipEncoder:
    modality: Modality = "image"
    backend = "torch"
    sample_rate: int | None = None

    def __init__(self, model: Any, preprocess: Any, tokenizer: Any, name: str, device: str, precision: str) -> None:
        self.model = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.precision = precision
        self.identity = model_identity("open_clip", name, torch_fingerprint(model), precision)
        self.dtype = next(model.parameters()).dtype
        self.scoring = scoring_of(model)
        self.spec = PreprocessSpec.from_open_clip(get_model_preprocess_cfg(model))

    @classmethod
    def load(cls, model_name: str, pretrained: str | None, device: str, precision: str = "fp32") -> ClipEncoder:
        import open_clip

        local = model_name.startswith("local-dir:")
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=None if local else pretrained,
                device=device,
                # bf16: every weight in bf16 ("pure"); open_clip's plain "bf16" keeps some in fp32, and the
                # first layer's input would then need a dtype of its own.
                precision="pure_bf16" if precision == "bf16" else precision,
                require_pretrained=True,
            )
            tokenizer = open_clip.get_tokenizer(model_name)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise ModelUnavailable(_explain_failure(model_name, pretrained, exc)) from exc
        model.eval()
        name = model_name if local or not pretrained else f"{model_name}/{os.path.basename(str(pretrained))}"
        return cls(model, preprocess, tokenizer, name=name, device=device, precision=precision)

    def mel_stream(self, max_window_samples: int | None = None) -> None:
        return None  # images have no streaming front end

    @property
    def input_side(self) -> int | None:
        return min(self.spec.size)

    def prepare_one(self, image: np.ndarray) -> np.ndarray:
        """An RGB uint8 picture to the model's normalized float32 (3, height, width) input."""
        return preprocess(image, self.spec)

    def prepare(self, inputs: list[np.ndarray]) -> torch.Tensor:
        """RGB uint8 pictures, or ``prepare_one`` results, to a normalized batch, as open_clip's transform would."""
        return torch.from_numpy(
            np.stack([item if item.dtype == np.float32 else preprocess(item, self.spec) for item in inputs])
        )

    @torch.inference_mode()
    def encode(self, prepared: torch.Tensor) -> np.ndarray:
        features = self.model.encode_image(prepared.to(self.device, self.dtype), normalize=True)
        return features.float().cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(prompts)
        if not self._can_cut_tokens():  # SigLIP's text tower, for one: bidirectional, pooled at the last position
            chunks = [tokens[start : start + TEXT_BATCH] for start in range(0, len(tokens), TEXT_BATCH)] or [tokens]
            return torch.cat(
                [self.model.encode_text(chunk.to(self.device), normalize=True).float().cpu() for chunk in chunks]
            ).numpy()
        lengths = self._real_lengths(tokens)
        order = torch.argsort(lengths)
        out = torch.empty(len(prompts), self.model.text_projection.shape[-1], dtype=torch.float32)
        # Sorting by length keeps each chunk's cut tight: short labels never pay for long ones.
        for start in range(0, len(prompts), TEXT_BATCH):
            index = order[start : start + TEXT_BATCH]
            cut = int(lengths[index].max())
            out[index] = self.encode_tokens_cut(tokens[index, :cut].to(self.device)).float().cpu()
        return out.numpy()

    def _can_cut_tokens(self) -> bool:
        # Cutting padding is exact only with a causal mask (no position sees later padding) and
        # pooling at the end-of-text token; other text towers take the stock path.
        model = self.model
        return (
            hasattr(model, "token_embedding")
            and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        )

    def _real_lengths(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.model.text_pool_type == "eos":
            end = (tokens == self.model.text_eos_id).int().argmax(dim=-1)
        else:
            end = tokens.argmax(dim=-1)
        return end + 1

    def encode_tokens_cut(self, tokens: torch.Tensor) -> torch.Tensor:
        """open_clip's CLIP.encode_text on sequences cut to ``tokens.shape[1]`` positions."""
        from open_clip.transformer import text_global_pool

        model = self.model
        length = tokens.shape[1]
        cast_dtype = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast_dtype)
        x = x + model.positional_embedding[:length].to(cast_dtype)
        x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
        x = model.ln_final(x)
        x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
        if isinstance(model.text_projection, torch.nn.Linear):
            x = model.text_projection(x)
        else:
            x = x @ model.text_projection
        return torch.nn.functional.normalize(x, dim=-1)


def scoring_of(model: Any) -> Scoring:
    """SigLIP models (open_clip builds them with a learned ``logit_bias``) score each label on its own with a
    sigmoid; CLIP ones with a softmax over the label set."""
    scale = float(model.logit_scale.exp().item())
    if getattr(model, "logit_bias", None) is not None:
        return Scoring("sigmoid", scale, float(model.logit_bias.item()))
    return Scoring("softmax", scale)


def _explain_failure(model_name: str, pretrained: str | None, exc: Exception) -> str:
    what = f"image model {model_name!r}" + (f" with pretrained {pretrained!r}" if pretrained else "")
    if model_name.startswith("local-dir:"):
        hint = "the folder needs open_clip_config.json and a weights file (open_clip_pytorch_model.bin or .safetensors)"
    elif hub_is_offline():
        hint = (
            f"it is not in the local cache ({cache_location()}) and the hub is offline or unreachable. "
            "Point --image-model at a local copy: local-dir:/path/to/folder (open_clip_config.json + weights), "
            "or keep --image-model and give --image-pretrained /path/to/weights.bin"
        )
    else:
        hint = "check the model name and pretrained tag (open_clip.list_pretrained() lists them)"
    return f"cannot load {what}: {hint}. Cause: {exc}"
