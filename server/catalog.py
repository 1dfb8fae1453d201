"""The models Sensorium knows (``sensorium models``): where each comes from, whether it is here, how large it is.

The catalog is data: each entry is a model string as ``--image-model`` / ``--audio-model`` take it, its
pretrained tag, the hub repo and files loading fetches, and its architecture. A size is exact from the hub
when it answers, the bytes on disk for what is cached, and otherwise an estimate: the architecture's parameter
count (built on torch's "meta" device: no memory, no download) times 4 bytes. Nothing here downloads weights.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from .encoders import BACKENDS
from .protocol import Modality
from .settings import DEFAULT_AUDIO_MODEL, DEFAULT_IMAGE_MODEL, DEFAULT_IMAGE_PRETRAINED

log = logging.getLogger("sensorium.models")

OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # open_clip takes the first found
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # what from_pretrained takes, in its order
HF_EXTRAS = (
    "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "vocab.json", "merges.txt", "spiece.model",
)  # fmt: skip
LAION_CLAP_REPO = "lukewys/laion_clap"
OPENAI_URL_CACHE = "~/.cache/clip"  # where open_clip keeps weights it fetched by URL
HUB_TIMEOUT_S = 10.0
BYTES_PER_PARAMETER = 4  # float32, as the checkpoints are published

# transformers architectures, for estimates: a config class's defaults are its base checkpoint's architecture
# (CLIPConfig: openai/clip-vit-base-patch32; SiglipConfig: google/siglip-base-patch16-224; ClapConfig:
# laion/clap-htsat-unfused), and the others differ from it by these overrides.
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "clip-vit-b-32": ("CLIP", {}),
    "clip-vit-b-16": ("CLIP", {"vision_config": {"patch_size": 16}}),
    "clip-vit-l-14": (
        "CLIP",
        {
            "projection_dim": 768,
            "text_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12},
            "vision_config": {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_attention_heads": 16,
                "num_hidden_layers": 24,
                "patch_size": 14,
            },
        },
    ),
    "siglip-b-16": ("Siglip", {}),
    "siglip2-b-16": ("Siglip", {"text_config": {"vocab_size": 256000}}),  # SigLIP 2 has Gemma's tokenizer
    "clap-htsat-tiny": ("Clap", {}),
    "clap-htsat-tiny-fused": ("Clap", {"audio_config": {"enable_fusion": True}}),
    "clap-htsat-base": (
        "Clap",
        {"audio_config": {"depths": [2, 2, 12, 2], "patch_embeds_hidden_size": 128, "hidden_size": 1024}},
    ),
}

OPEN_CLIP_CURATED = (
    ("ViT-B-32", "datacomp_xl_s13b_b90k"),
    ("ViT-B-32", "laion2b_s34b_b79k"),
    ("ViT-B-32", "openai"),
    ("ViT-B-16", "datacomp_xl_s13b_b90k"),
    ("ViT-B-16", "openai"),
    ("ViT-L-14", "datacomp_xl_s13b_b90k"),
    ("ViT-L-14", "openai"),
    ("ViT-B-16-SigLIP", "webli"),
    ("ViT-B-16-SigLIP2", "webli"),
)
TRANSFORMERS_IMAGE = {
    "openai/clip-vit-base-patch32": "clip-vit-b-32",
    "openai/clip-vit-base-patch16": "clip-vit-b-16",
    "openai/clip-vit-large-patch14": "clip-vit-l-14",
    "google/siglip-base-patch16-224": "siglip-b-16",
    "google/siglip2-base-patch16-224": "siglip2-b-16",
}
TRANSFORMERS_CLAP = {
    "laion/clap-htsat-unfused": "clap-htsat-tiny",
    "laion/clap-htsat-fused": "clap-htsat-tiny-fused",
    "laion/larger_clap_general": "clap-htsat-base",
    "laion/larger_clap_music_and_speech": "clap-htsat-base",
    "laion/larger_clap_music": "clap-htsat-base",
}
LAION_CLAP = {
    "630k-audioset-best.pt": "clap-htsat-tiny",
    "630k-audioset-fusion-best.pt": "clap-htsat-tiny-fused",
    "630k-best.pt": "clap-htsat-tiny",
    "630k-fusion-best.pt": "clap-htsat-tiny-fused",
    "music_audioset_epoch_15_esc_90.14.pt": "clap-htsat-base",
    "music_speech_audioset_epoch_15_esc_89.98.pt": "clap-htsat-base",
    "music_speech_epoch_15_esc_89.25.pt": "clap-htsat-base",
}


@dataclass(frozen=True)
class Entry:
    """One model Sensorium knows, and where its files come from."""

    modality: Modality
    family: str  # as server.encoders.model_family names it: open_clip, transformers, clap, laion_clap
    model: str  # what --image-model / --audio-model takes
    pretrained: str | None  # what --image-pretrained takes (open_clip built-in names)
    architecture: str  # an open_clip model name, or a key of ARCHITECTURES
    repo: str | None  # the hub repo its files come from
    weights: tuple[str, ...]  # its weights file: the first of these the repo has
    config: str | None = None  # a file loading needs besides the weights (transformers: config.json)
    extras: tuple[str, ...] = ()  # files loading also fetches where the repo has them (processor, tokenizer)
    url: str | None = None  # open_clip: the weights' own URL, used where the hub is not

    @property
    def flags(self) -> tuple[str, ...]:
        """What to type to serve it."""
        option = "--image-model" if self.modality == "image" else "--audio-model"
        return (option, self.model, *(("--image-pretrained", self.pretrained) if self.pretrained else ()))

    @property
    def is_default(self) -> bool:
        if self.modality == "image":
            return (self.model, self.pretrained) == (DEFAULT_IMAGE_MODEL, DEFAULT_IMAGE_PRETRAINED)
        return self.model == DEFAULT_AUDIO_MODEL

    @property
    def loadable(self) -> bool:
        """Whether this version of the server has a backend for the model's family."""
        return any(family == self.family for family, _ in BACKENDS)


def open_clip_entry(name: str, tag: str) -> Entry:
    """A built-in open_clip name and pretrained tag, with the repo and file open_clip's own table gives."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        raise ValueError(f"open_clip knows no pretrained tag {tag!r} for {name!r}")
    repo, filename = os.path.split(str(cfg.get("hf_hub") or ""))  # "org/repo/" or "org/repo/file.bin"
    weights: tuple[str, ...] = OPEN_CLIP_WEIGHTS
    if filename:  # open_clip tries a .safetensors twin of a named .bin first
        twin = OPEN_CLIP_WEIGHTS[0] if filename == OPEN_CLIP_WEIGHTS[1] else filename[:-4] + ".safetensors"
        weights = (twin, filename) if filename.endswith((".bin", ".pth")) else (filename,)
    return Entry("image", "open_clip", name, tag, name, repo or None, weights, url=str(cfg.get("url") or "") or None)


def catalog(every_open_clip_tag: bool = False) -> list[Entry]:
    """The curated models, or with ``every_open_clip_tag`` every pretrained tag open_clip knows as well."""
    pairs = list(OPEN_CLIP_CURATED)
    if every_open_clip_tag:
        import open_clip

        pairs += [pair for pair in open_clip.list_pretrained() if pair not in OPEN_CLIP_CURATED]
    return [
        *(open_clip_entry(name, tag) for name, tag in pairs),
        *(_hub_id_entry("image", "transformers", model, arch) for model, arch in TRANSFORMERS_IMAGE.items()),
        *(_hub_id_entry("audio", "clap", model, arch) for model, arch in TRANSFORMERS_CLAP.items()),
        *(
            Entry("audio", "laion_clap", f"laion-clap:{name}", None, a, LAION_CLAP_REPO, (name,))
            for name, a in LAION_CLAP.items()
        ),
    ]


def _hub_id_entry(modality: Modality, family: str, model: str, architecture: str) -> Entry:
    """A transformers checkpoint named by its hub id: from_pretrained fetches its config, weights and processor."""
    return Entry(modality, family, model, None, architecture, model, HF_WEIGHTS, "config.json", HF_EXTRAS)


# --- what is here -----------------------------------------------------------


def cached_files(entry: Entry) -> list[str]:
    """The local paths of the entry's files (weights first); empty unless everything loading needs is here."""
    if entry.repo:
        found = [path for name in entry.weights if (path := _hub_cached(entry.repo, name))][:1]
        config = _hub_cached(entry.repo, entry.config) if entry.config else None
        if found and (config or not entry.config):
            return [
                *found,
                *([config] if config else []),
                *filter(None, (_hub_cached(entry.repo, x) for x in entry.extras)),
            ]
    if entry.url:
        path = os.path.join(os.path.expanduser(OPENAI_URL_CACHE), os.path.basename(entry.url))
        if os.path.isfile(path):
            return [path]
    return []


def cached(entry: Entry) -> bool:
    return bool(cached_files(entry))


def _hub_cached(repo: str, filename: str) -> str | None:
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo, filename)
    return path if isinstance(path, str) else None


# --- sizes --------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    bytes: int | None  # None: unknown
    source: Literal["hub", "cache", "estimate", "unknown"]

    def text(self) -> str:
        if self.bytes is None:
            return "?"
        return ("~" if self.source == "estimate" else "") + human_bytes(self.bytes)


def human_bytes(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            value = count / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{count} B"


def hub_listings(repos: Iterable[str]) -> dict[str, dict[str, int]]:
    """Each repo's file sizes, as the hub says (a few requests at once); a repo it did not answer is left out."""
    from huggingface_hub import HfApi

    api = HfApi()
    failures = _request_errors()

    def listing(repo: str) -> dict[str, int] | None:
        try:
            info = api.model_info(repo, files_metadata=True, timeout=HUB_TIMEOUT_S)
        except failures as exc:
            log.info("the hub did not list %s: %s", repo, exc)
            return None
        return {s.rfilename: s.size for s in info.siblings or [] if s.size is not None}

    unique = sorted(set(repos))
    with ThreadPoolExecutor(max_workers=8) as pool:
        listings = dict(zip(unique, pool.map(listing, unique), strict=True))
    return {repo: files for repo, files in listings.items() if files is not None}


def _request_errors() -> tuple[type[BaseException], ...]:
    # The hub client's HTTP errors are OSErrors (as are requests'); its transport's (httpx, httpx2) are not.
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(module).HTTPError)
    return tuple(errors)


def size(entry: Entry, listings: dict[str, dict[str, int]]) -> Size:
    """The download's size: the hub's listing, else the cached files', else an estimate."""
    files = listings.get(entry.repo or "")
    if files is not None:
        weights = next((name for name in entry.weights if name in files), None)
        if weights is not None:
            names = [weights, *([entry.config] if entry.config else []), *entry.extras]
            return Size(sum(files.get(name, 0) for name in names), "hub")
    paths = cached_files(entry)
    if paths:
        return Size(sum(os.path.getsize(path) for path in paths), "cache")
    parameters = parameter_count("open_clip" if entry.family == "open_clip" else "transformers", entry.architecture)
    if parameters is None:
        return Size(None, "unknown")
    return Size(parameters * BYTES_PER_PARAMETER, "estimate")


@functools.cache
def parameter_count(library: str, architecture: str) -> int | None:
    """The parameters of an open_clip model name's or ARCHITECTURES' (``library`` "transformers") model, counted
    on one built on the "meta" device; None where it cannot be built here (an open_clip text tower from the hub,
    offline)."""
    import torch

    logging.disable(logging.WARNING)  # "no pretrained weights loaded": none are wanted
    try:
        with torch.device("meta"), _values_not_written():
            model = _build_on_meta(library, architecture)
    except (OSError, RuntimeError, ValueError, KeyError, TypeError) as exc:
        log.info("cannot estimate the size of %s %s: %s", library, architecture, exc)
        return None
    finally:
        logging.disable(logging.NOTSET)
    return sum(parameter.numel() for parameter in model.parameters())


# In-place operations that only write values: initialisers' (a meta tensor has no values to write).
VALUE_WRITES = frozenset(
    f"aten::{name}_"
    for name in (
        "uniform", "normal", "erfinv", "clamp", "clamp_min", "clamp_max", "mul", "add", "sub", "div", "zero",
        "fill", "copy", "exp", "log", "sqrt", "neg", "abs", "bernoulli", "exponential", "random", "masked_fill",
    )
)  # fmt: skip


def _values_not_written() -> Any:
    """A mode in which initialisers' in-place writes to meta tensors are skipped: they have nothing to write, and
    torch's meta implementations of them (Python) made building a model on "meta" take seconds."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class SkipValueWrites(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            target = args[0] if args else None
            if func._schema.name in VALUE_WRITES and isinstance(target, torch.Tensor) and target.is_meta:
                return target
            return func(*args, **(kwargs or {}))

    return SkipValueWrites()


def _build_on_meta(library: str, architecture: str) -> Any:
    if library == "open_clip":
        import open_clip

        return open_clip.create_model(architecture, pretrained=None, load_weights=False, device="meta")
    import transformers

    kind, overrides = ARCHITECTURES[architecture]
    config = getattr(transformers, f"{kind}Config")(**overrides)
    return getattr(transformers, f"{kind}Model")(config)
