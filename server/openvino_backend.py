"""Images and audio on CPUs through OpenVINO: the torch model's image or audio tower, converted once and cached.

The model loads through its torch backend (``server.clip`` / ``server.hf_clip`` / ``server.clap``, fp32 on the
CPU), so every model those accept is accepted here, from the same files (but SigLIP 2 NaFlex: refused). Its image
tower (open_clip ``encode_image`` or transformers ``get_image_features``, + L2 norm, what ``ClipEncoder.encode`` /
``HfClipEncoder.encode`` compute) or audio tower (CLAP ``get_audio_features`` → pooled → L2 norm, what
``ClapEncoder.encode`` computes) is traced, converted to OpenVINO with a dynamic batch, saved as IR on disk and
compiled for the CPU at the asked precision (fp32 → ``f32``, bf16 → ``bf16``, the latter only on a CPU that
OpenVINO says has bf16 units: elsewhere it would quietly run f32, so it is refused).

Text stays on torch fp32: labels are embedded once per label-file change (and then kept in the label cache),
the torch text path already cuts padding per length-sorted chunk, and the same tower converted (with a dynamic
length, fed the same chunks) measured only ~1.2x faster on a 2-core AVX2 EPYC (``sensorium bench
--parts text-backends``). So label embeddings are the torch fp32 ones, cached under the torch
encoder's identity and shared with ``--backend torch``.

The conversion cache (``SENSORIUM_OV_CACHE``, default ``~/.cache/sensorium/openvino``, ``''`` turns it off) holds
one folder per converted tower, named by a hash of the torch model's identity (family, name, weight
fingerprint), the modality, the input shape and the OpenVINO, torch and model-library versions; inside it, the
IR (``model.xml`` + ``model.bin``) and, per precision, OpenVINO's compiled blobs (``CACHE_DIR``). A restart with
the same model reads the IR and the blob: no tracing, no conversion, no compilation.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .encoders import BACKENDS, Encoder, ModelSpec
from .hub import ModelUnavailable
from .protocol import Modality

log = logging.getLogger("sensorium.models")

CACHE_ENV = "SENSORIUM_OV_CACHE"
DEFAULT_CACHE = "~/.cache/sensorium/openvino"
FORMAT = 1  # bump when what is traced changes, so old IR is not reused
HINTS = {"fp32": "f32", "bf16": "bf16"}
INSTALL = 'pip install "sensorium[openvino]"'

# How many towers this process has converted (rather than read from the cache): tests read it.
conversions = 0


def load(spec: ModelSpec) -> Encoder:
    """The factory's entry point (server.encoders.build_encoder) for OpenVINO on the CPU."""
    problem = _refusal(spec)
    if problem:
        raise ValueError(problem)
    try:
        openvino = import_openvino()
    except ImportError as exc:
        raise ModelUnavailable(f"--backend openvino needs OpenVINO: {INSTALL}") from exc
    torch_encoder = _torch_backend(spec).load(_torch_spec(spec))
    problem = _refusal(spec)  # again: a hub id downloaded just now has its config.json only now
    if problem:
        raise ModelUnavailable(problem)
    encoder: Encoder = OpenVinoEncoder.convert(torch_encoder, spec.precision, cache_root(), openvino)  # mypy: it is one
    return encoder


def missing(spec: ModelSpec) -> str | None:
    """Why this model cannot run on OpenVINO here (checked before anything loads), or None when it can."""
    try:
        import_openvino()
    except ImportError:
        return f"--backend openvino: OpenVINO is not installed ({INSTALL})"
    problem = _refusal(spec)
    if problem:
        return problem
    found: str | None = _torch_backend(spec).missing(_torch_spec(spec))
    # Again once the torch backend has looked: a hub id's config.json, which tells a NaFlex model, may be here only now.
    return found or _refusal(spec)


def cache_root() -> Path | None:
    """Where converted models are kept (``SENSORIUM_OV_CACHE``; empty: nowhere, convert at every start)."""
    folder = os.environ.get(CACHE_ENV, DEFAULT_CACHE)
    return Path(folder).expanduser() if folder else None


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 here (AVX512-BF16 or AMX); without it a bf16 hint runs f32."""
    return "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _refusal(spec: ModelSpec) -> str | None:
    if spec.family == "transformers":
        from .hf_clip import model_type

        if model_type(spec.model) == "siglip2":
            return (
                f"--backend openvino: {spec.model!r} is a SigLIP 2 NaFlex model, whose image tower resizes its "
                "position embeddings to each picture's patch grid, which a converted graph cannot follow: use "
                "--backend torch for it"
            )
    if spec.device != "cpu":
        return f"--backend openvino runs on the CPU, not on {spec.device!r}: add --device cpu (or use --backend torch)"
    if spec.precision not in HINTS:
        return f"--backend openvino: precision {spec.precision!r} is not supported on CPUs (fp32 or bf16)"
    if spec.precision == "bf16":
        with contextlib.suppress(ImportError):  # reported by the caller
            if not cpu_has_bf16():
                return (
                    "--backend openvino --precision bf16 needs a CPU with bf16 units (AVX512-BF16 or AMX); OpenVINO "
                    "finds none on this one and would run fp32 anyway: use --precision fp32"
                )
    return None


def _torch_backend(spec: ModelSpec) -> Any:
    return importlib.import_module(BACKENDS[(spec.family, "torch")])


def _torch_spec(spec: ModelSpec) -> ModelSpec:
    return replace(spec, device="cpu", backend="torch", precision="fp32")


class OpenVinoEncoder:
    """An Encoder whose image or audio tower runs on a compiled OpenVINO model; text and preprocessing (including
    ``prepare_one`` and the streaming mel front end) are the torch encoder's."""

    device = "cpu"
    backend = "openvino"

    def __init__(self, torch_encoder: Encoder, compiled: Any, precision: str, converted: bool) -> None:
        self.torch_encoder = torch_encoder
        self.modality: Modality = torch_encoder.modality
        self.name = torch_encoder.name
        # Label embeddings come from the torch fp32 text tower: the torch encoder's identity is theirs.
        self.identity = torch_encoder.identity
        self.scoring = torch_encoder.scoring
        self.input_side = torch_encoder.input_side
        self.sample_rate = torch_encoder.sample_rate
        self.precision = precision
        self.converted = converted  # this load traced and converted the tower (no usable cache)
        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request, reused: one call at a time

    @classmethod
    def convert(cls, torch_encoder: Any, precision: str, root: Path | None, openvino: Any) -> OpenVinoEncoder:
        if torch_encoder.modality == "audio" and torch_encoder.model.config.audio_config.enable_fusion:
            raise ModelUnavailable(
                f"audio model {torch_encoder.name!r} is a fused CLAP checkpoint, whose audio tower takes a "
                "data-dependent path that a converted graph cannot keep: use --backend torch for it"
            )
        tower, example, shapes = _tower(torch_encoder)
        core = openvino.Core()
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": _threads(),
        }
        folder = _cache_folder(root, torch_encoder, shapes, openvino) if root else None
        compiled = None
        converted = False
        if folder is not None and _complete(folder):
            try:
                compiled = _compile_ir(core, folder, precision, config)
                log.info("%s: OpenVINO model from the conversion cache %s", torch_encoder.modality, folder)
            except RuntimeError as exc:  # a damaged IR: convert again, in its place
                log.warning(
                    "%s: cached OpenVINO model %s unusable (%s): converting again", torch_encoder.modality, folder, exc
                )
                shutil.rmtree(folder, ignore_errors=True)
        if compiled is None:
            model = _convert(tower, example, shapes, openvino)
            converted = True
            if folder is not None and _save(model, folder, openvino, describe(torch_encoder, shapes, openvino)):
                log.info("%s: converted to OpenVINO, kept in %s", torch_encoder.modality, folder)
                compiled = _compile_ir(core, folder, precision, config)
            else:
                compiled = core.compile_model(model, "CPU", config)
        ran = compiled.get_property("INFERENCE_PRECISION_HINT")
        ran = ran.get_type_name() if hasattr(ran, "get_type_name") else str(ran)
        if ran != HINTS[precision]:
            log.warning("%s: OpenVINO was asked for %s and runs %s", torch_encoder.modality, precision, ran)
        return cls(torch_encoder, compiled, precision, converted)

    def prepare_one(self, item: Any) -> Any:
        return self.torch_encoder.prepare_one(item)

    def mel_stream(self, max_window_samples: int | None = None) -> Any:
        return self.torch_encoder.mel_stream(max_window_samples)

    def prepare(self, inputs: list[Any]) -> list[np.ndarray]:
        """The torch encoder's own preprocessing (of raw inputs or ``prepare_one``/``mel_stream`` results), as
        numpy arrays in the converted model's input order."""
        prepared = self.torch_encoder.prepare(inputs)
        if self.modality == "audio":  # CLAP: input_features, is_longer
            return [np.ascontiguousarray(prepared[name].numpy()) for name in AUDIO_INPUTS]
        if isinstance(prepared, dict):  # transformers: the keyword arguments of get_image_features
            prepared = prepared["pixel_values"]
        return [np.ascontiguousarray(prepared.numpy())]

    def encode(self, prepared: list[np.ndarray]) -> np.ndarray:
        with self._lock:
            result = self._request.infer(dict(enumerate(prepared)), share_inputs=True)
            # The request's output buffer is reused by the next call: copy it out.
            out = np.array(result[0], dtype=np.float32)
        # Unit rows in float32 whatever precision the graph's own normalization ran at (bf16 is off by ~0.4%).
        out /= np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out

    def encode_text(self, prompts: list[str]) -> np.ndarray:
        return self.torch_encoder.encode_text(prompts)


# --- what is converted --------------------------------------------------------------------------------------


AUDIO_INPUTS = ("input_features", "is_longer")  # what ClapProcessor's feature extractor returns, in this order


class ImageTower(torch.nn.Module):
    """``ClipEncoder.encode``: open_clip's encode_image, normalized."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features: torch.Tensor = self.model.encode_image(pixels, normalize=True)
        return features


class TransformersImageTower(torch.nn.Module):
    """``HfClipEncoder.encode``: transformers' get_image_features, its projection, normalized."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        output = self.model.get_image_features(pixel_values=pixel_values)
        pooled = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(pooled, dim=-1)


class AudioTower(torch.nn.Module):
    """``ClapEncoder.encode``: get_audio_features, its pooled projection, normalized."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor, is_longer: torch.Tensor) -> torch.Tensor:
        output = self.model.get_audio_features(input_features=input_features, is_longer=is_longer)
        pooled = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(pooled, dim=-1)


def _tower(torch_encoder: Any) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...], list[list[int]]]:
    """The torch module to trace, an example input (batch 2, so nothing is specialized to 1) and the input
    shapes with a dynamic (-1) batch."""
    model = torch_encoder.model
    if torch_encoder.modality == "image":
        side = list(torch_encoder.spec.size)
        pixels = torch.randn(2, 3, *side, generator=torch.Generator().manual_seed(0))
        tower = TransformersImageTower(model) if _library(torch_encoder) == "transformers" else ImageTower(model)
        return tower.eval(), (pixels,), [[-1, 3, *side]]
    silence = np.zeros(int(torch_encoder.sample_rate), dtype=np.float32)
    prepared = torch_encoder.prepare([silence, silence])
    if sorted(prepared) != sorted(AUDIO_INPUTS):
        raise ModelUnavailable(f"audio model {torch_encoder.name!r}: unexpected feature names {sorted(prepared)}")
    example = tuple(prepared[name] for name in AUDIO_INPUTS)
    return AudioTower(model).eval(), example, [[-1, *tensor.shape[1:]] for tensor in example]


def _convert(tower: torch.nn.Module, example: tuple[torch.Tensor, ...], shapes: list[list[int]], openvino: Any) -> Any:
    global conversions
    with warnings.catch_warnings(), torch.no_grad():
        # Tracing warns about shape-dependent Python branches: every dimension but the batch is fixed here.
        warnings.simplefilter("ignore")
        # check_trace off: open_clip's towers retrace to textually different (numerically equal) graphs;
        # tests/test_openvino.py holds the result to torch on real inputs instead.
        traced = torch.jit.trace(tower, example, check_trace=False, strict=False)
        with _telemetry_declined():
            model = openvino.convert_model(traced, input=[openvino.PartialShape(shape) for shape in shapes])
    conversions += 1
    return model


def import_openvino() -> Any:
    """``import openvino`` with its usage statistics declined: the import itself starts them (and the converter
    sends more), so every import of it here goes through this."""
    with _telemetry_declined():
        import openvino
    return openvino


@contextlib.contextmanager
def _telemetry_declined() -> Iterator[None]:
    """OpenVINO (on import, and its converter) sends usage statistics to Google Analytics unless the user opted
    out, and declines by itself only in CI (``CI=true``): it is told it is in CI for those moments. A server
    that may run offline makes no calls nobody asked for."""
    before = os.environ.get("CI")
    os.environ["CI"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("CI", None)
        else:
            os.environ["CI"] = before


def _threads() -> int:
    # The torch parts (text, preprocessing) run on torch's threads on the same cores: use as many.
    return max(1, torch.get_num_threads())


# --- the conversion cache -----------------------------------------------------------------------------------


def _complete(folder: Path) -> bool:
    return (folder / "model.xml").is_file() and (folder / "model.bin").is_file()


def _compile_ir(core: Any, folder: Path, precision: str, config: dict[str, Any]) -> Any:
    # OpenVINO keeps the compiled blob too (it keys it by the IR and this config), a folder per precision.
    cached = {**config, "CACHE_DIR": str(folder / f"compiled-{precision}")}
    return core.compile_model(str(folder / "model.xml"), "CPU", cached)


def describe(torch_encoder: Any, shapes: list[list[int]], openvino: Any) -> dict[str, Any]:
    """Everything the converted model depends on: its cache folder is named by a hash of this."""
    library = _library(torch_encoder)
    return {
        "format": FORMAT,
        "modality": torch_encoder.modality,
        "identity": torch_encoder.identity,  # family:name:weight fingerprint:fp32
        "inputs": shapes,
        "openvino": openvino.get_version(),
        "torch": torch.__version__,
        library: getattr(importlib.import_module(library), "__version__", "?"),
    }


def _library(torch_encoder: Any) -> str:
    """Which library's model the torch encoder runs (its identity starts with its family)."""
    return "open_clip" if torch_encoder.identity.startswith("open_clip:") else "transformers"


def _cache_folder(root: Path, torch_encoder: Any, shapes: list[list[int]], openvino: Any) -> Path:
    key = json.dumps(describe(torch_encoder, shapes, openvino), sort_keys=True)
    return root / f"{torch_encoder.modality}-{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def _save(model: Any, folder: Path, openvino: Any, about: dict[str, Any]) -> bool:
    """Write the IR into ``folder`` all at once (a temporary folder renamed), so no reader sees half of it."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    except OSError as exc:
        log.warning("OpenVINO conversion cache %s is not writable (%s): converting at every start", folder, exc)
        return False
    try:
        openvino.save_model(model, str(staging / "model.xml"), compress_to_fp16=False)
        (staging / "about.json").write_text(json.dumps(about, indent=2))
        try:
            staging.rename(folder)
        except OSError:
            if not _complete(folder):  # not another process that got there first
                raise
    except OSError as exc:
        log.warning("could not keep the converted model in %s (%s): converting at every start", folder, exc)
        return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
