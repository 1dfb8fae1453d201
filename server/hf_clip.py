"""Images: CLIP, SigLIP and SigLIP 2 through transformers (hub ids, or folders written by save_pretrained).

The checkpoint's config.json says which (``model_type`` clip, siglip or siglip2: SigLIP 2's fixed-resolution
checkpoints are ``siglip`` ones, ``siglip2`` is NaFlex). Pictures are preprocessed as the checkpoint's own image
processor would (server/preprocess.py, or server/naflex.py for NaFlex), prompts with its own tokenizer.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch

from . import hub
from .clap import DTYPES, PRECISIONS
from .encoders import ModelSpec
from .hub import ModelUnavailable, cache_location, hub_is_offline
from .identity import model_identity, torch_fingerprint
from .naflex import NaflexSpec, Patches, patches
from .preprocess import PreprocessSpec, preprocess, transformers_pixels
from .protocol import Modality
from .scoring import Scoring

TEXT_BATCH = 256
MODEL_CLASSES = {"clip": "CLIPModel", "siglip": "SiglipModel", "siglip2": "Siglip2Model"}
SUPPORTED = "CLIP, SigLIP or SigLIP 2 (config.json model_type clip, siglip or siglip2)"


def needs_hub(model_id: str) -> bool:
    return not os.path.isdir(model_id)


def load(spec: ModelSpec) -> HfClipEncoder:
    """The factory's entry point (server.encoders.build_encoder) for transformers CLIP and SigLIP on torch."""
    if needs_hub(spec.model):
        hub.go_offline_unless_hub_reachable()
    return HfClipEncoder.load(spec.model, spec.device, spec.precision)


def missing(spec: ModelSpec) -> str | None:
    """Why the model cannot be loaded from what is on this machine and reachable, or None when it can."""
    model = spec.model
    needs = (
        "a transformers folder needs what CLIPModel/SiglipModel.save_pretrained and the processor's save_pretrained "
        "write; an open_clip folder needs open_clip_config.json"
    )
    problem = hub.folder_or_hub_id_problem("image model", model, needs)
    if problem:
        return problem
    if os.path.isdir(model):
        return model_type_problem(model, model_type(model))
    hub.go_offline_unless_hub_reachable()
    try:
        cached = _config_file(model)
    except ValueError as exc:
        return f"image model {model!r} is neither a folder nor a hub id (org/name): {exc}"
    if cached:
        return model_type_problem(model, model_type(model))
    if hub_is_offline():
        return (
            f"image model {model!r} is not in the local cache ({cache_location()}) and the hub is offline or "
            "unreachable: point --image-model at a local folder written by save_pretrained (model and processor)"
        )
    return _fetched_config_problem(model)


def _fetched_config_problem(model_id: str) -> str | None:
    """Online, a hub id not cached yet: its config.json alone (a few kB) is fetched now, so that a model of another
    type is refused before its weights download, and backends that cannot take some types see which it is."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        hf_hub_download(model_id, "config.json")
    except (OSError, ValueError, EntryNotFoundError) as exc:
        return f"image model {model_id!r}: its config.json cannot be fetched from the hub ({exc})"
    return model_type_problem(model_id, model_type(model_id))


def model_type(model: str) -> str | None:
    """The ``model_type`` in a folder's config.json, or in the hub cache's copy of a hub id's; None if neither
    is there or readable."""
    try:
        config = _config_file(model)
    except ValueError:
        return None
    if config is None:
        return None
    try:
        with open(config, encoding="utf-8") as file:
            found = json.load(file).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return str(found) if found is not None else None


def _config_file(model: str) -> str | None:
    """A folder's config.json, or the hub cache's copy of a hub id's (ValueError: not a valid hub id)."""
    if os.path.isdir(model):
        path = os.path.join(model, "config.json")
        return path if os.path.isfile(path) else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "config.json")
    return cached if isinstance(cached, str) else None


def model_type_problem(model: str, model_type: str | None) -> str | None:
    """Why a checkpoint of this ``model_type`` is not an image model served here, or None."""
    if model_type in MODEL_CLASSES:
        return None
    if model_type is None:
        return f"image model {model!r}: its config.json cannot be read or names no model_type; expected {SUPPORTED}"
    hint = " (an audio model: give it as --audio-model)" if model_type == "clap" else ""
    return f"image model {model!r}: config.json has model_type {model_type!r}{hint}; expected {SUPPORTED}"


class HfClipEncoder:
    modality: Modality = "image"
    backend = "torch"
    sample_rate: int | None = None

    def __init__(self, model: Any, image_processor: Any, tokenizer: Any, name: str, device: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.device = device
        self.model_type: str = model.config.model_type
        self.dtype = next(model.parameters()).dtype
        self.precision = PRECISIONS[self.dtype]
        self.identity = model_identity("transformers", name, torch_fingerprint(model), self.precision)
        scale = float(model.logit_scale.exp().item())
        if self.model_type == "clip":
            self.scoring = Scoring("softmax", scale)
        else:
            self.scoring = Scoring("sigmoid", scale, float(model.logit_bias.item()))
        # Text positions the model has: CLIP's prompts are cut to their real length within that, SigLIP's are
        # padded to it, as SigLIP was trained (its text tower pools the last position).
        self.text_length = int(model.config.text_config.max_position_embeddings)
        self.spec: PreprocessSpec | NaflexSpec = image_spec(image_processor, self.model_type)

    @classmethod
    def load(cls, model_id: str, device: str, precision: str = "fp32") -> HfClipEncoder:
        import transformers

        dtype = DTYPES[precision]
        try:
            config = transformers.AutoConfig.from_pretrained(model_id)
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(_explain_failure(model_id, exc)) from exc
        problem = model_type_problem(model_id, config.model_type)
        if problem:
            raise ModelUnavailable(problem)
        model_class = getattr(transformers, MODEL_CLASSES[config.model_type])
        try:
            image_processor = transformers.AutoImageProcessor.from_pretrained(model_id)
            tokenizer = transformers.AutoTokenizer.from_pretrained(model_id)
            model = model_class.from_pretrained(model_id, dtype=dtype)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelUnavailable(_explain_failure(model_id, exc)) from exc
        model.to(device).eval()
        try:
            return cls(model, image_processor, tokenizer, name=model_id, device=device)
        except ValueError as exc:  # a processor setting not reproduced here
            raise ModelUnavailable(f"image model {model_id!r}: {exc}") from exc

    def mel_stream(self, max_window_samples: int | None = None) -> None:
        return None  # images have no streaming front end

    @property
    def input_side(self) -> int | None:
        if isinstance(self.spec, NaflexSpec):
            return self.spec.square_side
        return max(self.spec.size)

    def prepare_one(self, image: np.ndarray) -> np.ndarray | Patches:
        """An RGB uint8 picture to the model's input: normalized float32 (3, height, width), or NaFlex patches."""
        if isinstance(self.spec, NaflexSpec):
            return patches(image, self.spec)
        return preprocess(image, self.spec)

    def prepare(self, inputs: list[Any]) -> dict[str, torch.Tensor]:
        """RGB uint8 pictures, or ``prepare_one`` results, to the keyword arguments of ``get_image_features``."""
        spec = self.spec
        if isinstance(spec, NaflexSpec):
            grids = [item if isinstance(item, Patches) else patches(item, spec) for item in inputs]
            return {
                "pixel_values": torch.from_numpy(np.stack([grid.pixels for grid in grids])),
                "pixel_attention_mask": torch.from_numpy(np.stack([grid.mask for grid in grids])),
                "spatial_shapes": torch.tensor([grid.spatial_shape for grid in grids], dtype=torch.long),
            }
        ready = [item if item.dtype == np.float32 else preprocess(item, spec) for item in inputs]
        return {"pixel_values": torch.from_numpy(np.stack(ready))}

    @torch.inference_mode()
    def encode(self, prepared: dict[str, torch.Tensor]) -> np.ndarray:
        inputs = {
            key: value.to(self.device, self.dtype) if key == "pixel_values" else value.to(self.device)
            for key, value in prepared.items()
        }
        return _unit(self.model.get_image_features(**inputs)).float().cpu().numpy()

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        if not prompts:
            return self.encode_text([""])[:0]
        cut = self.model_type == "clip"
        # CLIP: sorted by length, each chunk padded only to its longest prompt. Exact: its text tower has a causal
        # mask (no position sees the padding after it) and pools at the end-of-text token.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i])) if cut else list(range(len(prompts)))
        out: np.ndarray | None = None
        for start in range(0, len(prompts), TEXT_BATCH):
            index = order[start : start + TEXT_BATCH]
            tokens = self.tokenizer(
                [prompts[i] for i in index],
                padding="longest" if cut else "max_length",
                max_length=self.text_length,
                truncation=True,
                return_tensors="pt",
            ).to(self.device)
            chunk = _unit(self.model.get_text_features(**tokens)).float().cpu().numpy()
            if out is None:
                out = np.empty((len(prompts), chunk.shape[1]), dtype=np.float32)
            out[index] = chunk
        assert out is not None  # there was at least one prompt
        return out


def image_spec(image_processor: Any, model_type: str) -> PreprocessSpec | NaflexSpec:
    """How pictures are preprocessed for this checkpoint, from its image processor's settings."""
    if model_type != "siglip2":
        return PreprocessSpec.from_transformers(image_processor)
    interpolation, mean, std = transformers_pixels(image_processor)
    return NaflexSpec(int(image_processor.patch_size), int(image_processor.max_num_patches), interpolation, mean, std)


def _unit(output: Any) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output is the projected embedding.
    tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return torch.nn.functional.normalize(tensor, dim=-1)


def _explain_failure(model_id: str, exc: Exception) -> str:
    if os.path.isdir(model_id):
        hint = "the folder needs what the model's and its processor's save_pretrained write"
    elif hub_is_offline():
        hint = (
            f"it is not in the local cache ({cache_location()}) and the hub is offline or unreachable. "
            "Point --image-model at a local folder written by save_pretrained (model and processor)"
        )
    else:
        hint = "check the hub id (for example openai/clip-vit-base-patch32 or google/siglip-base-patch16-224)"
    return f"cannot load image model {model_id!r}: {hint}. Cause: {exc}"
