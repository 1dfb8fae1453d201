"""Image preprocessing with OpenCV and numpy, reproducing a model's own preprocess config (open_clip's, or a
transformers image processor's).

open_clip's transform goes through PIL and torchvision (about 3.5 ms for a 640x480 frame here); this
does the same resize, crop or pad, and normalization on arrays in well under a millisecond. A test
holds it to open_clip's transform: embeddings of the same pictures agree to a cosine of 0.999.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessSpec:
    size: tuple[int, int]  # (height, width)
    resize_mode: str  # "shortest" (resize, center-crop), "longest" (resize, pad), or "squash"
    interpolation: str  # "bicubic" or "bilinear"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    fill_color: int = 0
    # Whose transform is reproduced. "open_clip": PIL's filters (approximated with OpenCV's) and crop offsets
    # rounded, as torchvision's CenterCrop does. "transformers": the image processors' own calls: torchvision's
    # antialiased resize of uint8 tensors, and crop offsets rounded down.
    follows: str = "open_clip"

    @classmethod
    def from_open_clip(cls, cfg: dict[str, Any]) -> PreprocessSpec:
        size = cfg["size"]
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return cls(
            size=(int(height), int(width)),
            resize_mode=cfg.get("resize_mode", "shortest"),
            interpolation=cfg.get("interpolation", "bicubic"),
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            fill_color=int(cfg.get("fill_color", 0)),
        )

    @classmethod
    def from_transformers(cls, processor: Any) -> PreprocessSpec:
        """The spec of a transformers image processor (CLIPImageProcessor, SiglipImageProcessor) with a fixed
        output size: shortest edge to S then a centre crop of S x S (CLIP), or a squash to height x width
        (SigLIP). Other settings, which nothing here reproduces, raise ValueError naming them."""
        name = type(processor).__name__
        size, crop = _size_dict(processor.size), _size_dict(getattr(processor, "crop_size", None))
        cropped = bool(getattr(processor, "do_center_crop", False)) and bool(crop)
        if not processor.do_resize:
            raise ValueError(f"{name} with do_resize false (inputs of any size) is not supported")
        if size.get("shortest_edge") and not size.get("longest_edge"):
            side = int(size["shortest_edge"])
            if not cropped or (crop.get("height"), crop.get("width")) != (side, side):
                raise ValueError(
                    f"{name}: shortest_edge {side} with crop_size {crop or None} (do_center_crop "
                    f"{getattr(processor, 'do_center_crop', None)}); supported: a centre crop of {side}x{side}"
                )
            target, mode = (side, side), "shortest"
        elif size.get("height") and size.get("width"):
            target, mode = (int(size["height"]), int(size["width"])), "squash"
            if cropped and (crop.get("height"), crop.get("width")) != target:
                raise ValueError(f"{name}: a crop ({crop}) after resizing to {target} is not supported")
        else:
            raise ValueError(f"{name}: size {size} is not supported (shortest_edge, or height and width)")
        interpolation, mean, std = transformers_pixels(processor)
        return cls(target, mode, interpolation, mean, std, follows="transformers")


def transformers_pixels(processor: Any) -> tuple[str, tuple[float, float, float], tuple[float, float, float]]:
    """A transformers image processor's resampling filter, mean and std (0-1 pixels: 1/255 rescaling)."""
    name = type(processor).__name__
    if not processor.do_rescale or abs(float(processor.rescale_factor) - 1 / 255) > 1e-9:
        raise ValueError(
            f"{name}: do_rescale {processor.do_rescale}, rescale_factor {processor.rescale_factor}; "
            "only rescaling by 1/255 is supported"
        )
    if not processor.do_normalize:
        return _interpolation(name, processor.resample), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return _interpolation(name, processor.resample), _rgb(name, processor.image_mean), _rgb(name, processor.image_std)


def _rgb(name: str, values: Any) -> tuple[float, float, float]:
    if isinstance(values, (int, float)):
        return (float(values),) * 3
    if len(values) != 3:
        raise ValueError(f"{name}: image_mean and image_std need one value or three, got {values}")
    return float(values[0]), float(values[1]), float(values[2])


def _size_dict(size: Any) -> dict[str, Any]:
    """A transformers size (a dict, or a SizeDict with None for what it leaves out) as a dict of what is set."""
    if size is None:
        return {}
    items = size.items() if isinstance(size, dict) else vars(size).items()
    return {key: value for key, value in items if value is not None}


def _interpolation(name: str, resample: Any) -> str:
    # PIL's resampling codes (what preprocessor configs hold), or torchvision's mode names.
    value = getattr(resample, "value", resample)
    known = {2: "bilinear", 3: "bicubic", "bilinear": "bilinear", "bicubic": "bicubic"}
    if value not in known:
        raise ValueError(f"{name}: resample {resample!r} is not supported (bilinear or bicubic)")
    return known[value]


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """An RGB uint8 (height, width, 3) picture to the model's normalized float32 (3, height, width)."""
    target_h, target_w = spec.size
    height, width = image.shape[:2]
    if spec.resize_mode == "squash":
        resized = _resize(image, target_w, target_h, spec)
    elif spec.resize_mode == "longest":
        scale = min(target_h / height, target_w / width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        resized = _pad_center(_resize(image, new_w, new_h, spec), target_h, target_w, spec.fill_color)
    else:
        new_w, new_h = _shortest_side_size(width, height, target_h, target_w)
        resized = _center_crop(_resize(image, new_w, new_h, spec), target_h, target_w, spec.follows)
    pixels = resized.astype(np.float32) * (1 / 255.0)
    pixels -= np.asarray(spec.mean, dtype=np.float32)
    pixels /= np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _shortest_side_size(width: int, height: int, target_h: int, target_w: int) -> tuple[int, int]:
    if target_h == target_w:  # torchvision's Resize(int): the short side to size, the long one truncated
        size = target_h
        if width <= height:
            return size, int(size * height / width)
        return int(size * width / height), size
    scale = max(target_h / height, target_w / width)
    return max(target_w, round(width * scale)), max(target_h, round(height * scale))


def _resize(image: np.ndarray, width: int, height: int, spec: PreprocessSpec) -> np.ndarray:
    if (width, height) == (image.shape[1], image.shape[0]):
        return image
    if spec.follows == "transformers":
        return _torchvision_resize(image, width, height, spec.interpolation)
    interpolation = spec.interpolation
    shrinking = width < image.shape[1] and height < image.shape[0]
    # PIL, which open_clip's transform uses, filters over the whole source footprint when shrinking;
    # OpenCV's area interpolation does the same, its cubic one would alias.
    upscale = cv2.INTER_CUBIC if interpolation == "bicubic" else cv2.INTER_LINEAR
    flag = cv2.INTER_AREA if shrinking else upscale
    out: np.ndarray = cv2.resize(image, (width, height), interpolation=flag)
    return out


def _torchvision_resize(image: np.ndarray, width: int, height: int, interpolation: str) -> np.ndarray:
    import torch
    from torchvision.transforms.v2 import functional as tvf

    mode = tvf.InterpolationMode.BICUBIC if interpolation == "bicubic" else tvf.InterpolationMode.BILINEAR
    # torch.from_numpy shares memory, and warns about arrays it may not write to (decoded pictures are such).
    tensor = torch.from_numpy(image if image.flags.writeable else image.copy()).permute(2, 0, 1)
    out: np.ndarray = tvf.resize(tensor, [height, width], interpolation=mode, antialias=True).permute(1, 2, 0).numpy()
    return out


def _center_crop(image: np.ndarray, height: int, width: int, follows: str) -> np.ndarray:
    # torchvision's CenterCrop rounds the offsets; transformers' image processors round them down.
    offset = math.floor if follows == "transformers" else round
    top = offset((image.shape[0] - height) / 2.0)
    left = offset((image.shape[1] - width) / 2.0)
    return image[top : top + height, left : left + width]


def _pad_center(image: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    out = np.full((height, width, 3), fill, dtype=image.dtype)
    top = (height - image.shape[0]) // 2
    left = (width - image.shape[1]) // 2
    out[top : top + image.shape[0], left : left + image.shape[1]] = image
    return out
