"""Audio: laion_clap training checkpoints (``.pt``), served as transformers CLAP.

laion_clap saves ``{"epoch", "state_dict", "optimizer", ...}`` with ``torch.save``; the released checkpoints
(``lukewys/laion_clap`` on the hub: ``630k-audioset-best.pt``, ``music_audioset_epoch_15_esc_90.14.pt``, ...)
pair an HTS-AT audio tower (tiny, base or large; fused or not) with a RoBERTa-base text tower. The file is read
with ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers and never runs code named
in the file; the architecture is read from the weights' names and shapes, and the weights are renamed into a
transformers ``ClapModel`` (the mapping of transformers' own converter, ``convert_clap_original_pytorch_to_hf``)
that must come out complete: a weight left unfilled, or one of the file's weights with no place, is an error.
The encoder is then a ``ClapEncoder`` like any transformers CLAP model (streaming mel, precision, OpenVINO).

laion_clap tokenizes with roberta-base's byte-level BPE (``vocab.json`` + ``merges.txt``), found in this order:
a ``roberta-base`` folder beside the checkpoint, the hub cache (``FacebookAI/roberta-base`` or ``roberta-base``,
which laion_clap itself downloads), or a download of ``FacebookAI/roberta-base``'s two files.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import hub
from .clap import DTYPES, ClapEncoder
from .devmodels import LAION_FEATURES
from .encoders import ModelSpec
from .hub import ModelUnavailable, cache_location, hub_is_offline

HUB_PREFIX = "laion-clap:"
HUB_REPO = "lukewys/laion_clap"
SUFFIXES = (".pt", ".pth", ".ckpt")
TOKENIZER_FOLDER = "roberta-base"  # beside the checkpoint, for machines without the hub
TOKENIZER_REPOS = ("FacebookAI/roberta-base", "roberta-base")
TOKENIZER_FILES = ("vocab.json", "merges.txt")
CONTEXT_LENGTH = 77  # laion_clap pads and truncates prompts to 77 tokens
HEAD_WIDTH = 64  # RoBERTa-base's attention head width: the head count is not in the weights' shapes

# Checkpoint entries ClapModel has no place for, on purpose: the STFT kernels and mel filterbank (the feature
# extractor computes those; the filterbank is checked against it), the AudioSet classifier head, the training
# loss's MLPs, and index buffers and shifted-window masks that ClapModel makes itself.
UNUSED = re.compile(
    r"audio_branch\.(spectrogram_extractor|logmel_extractor|tscam_conv|head)\."
    r"|audio_branch\.layers\.\d+\.blocks\.\d+\.attn_mask$"
    r"|(text|audio)_transform\."
    r"|text_branch\.embeddings\.(position_ids|token_type_ids)$"
)
MADE_BY_CLAPMODEL = ("text_model.embeddings.position_ids", "text_model.embeddings.token_type_ids")
RENAMES = (
    ("text_branch.", "text_model."),
    ("audio_branch.", "audio_model.audio_encoder."),
    (".attn.proj.", ".attention.output.dense."),
    (".attn.", ".attention.self."),
    (".mlp.fc1.", ".intermediate.dense."),
    (".mlp.fc2.", ".output.dense."),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    ("audio_encoder.bn0.", "audio_encoder.batch_norm."),
    ("_projection.0.", "_projection.linear1."),
    ("_projection.2.", "_projection.linear2."),
)


def load(spec: ModelSpec) -> ClapEncoder:
    """The factory's entry point (server.encoders.build_encoder) for laion_clap checkpoints on torch."""
    path = checkpoint_path(spec.model)
    state = read_state_dict(path)
    model = clap_model(state, str(path))
    fused = bool(model.config.audio_config.enable_fusion)
    processor = laion_processor(fused, tokenizer_files(path), model.config.text_config.vocab_size, str(path))
    check_mel_filters(state, processor.feature_extractor, str(path))
    dtype = DTYPES[spec.precision]
    model.to(spec.device, dtype).eval()
    return ClapEncoder(model, processor, name=path.name, device=spec.device, family="laion_clap")


def missing(spec: ModelSpec) -> str | None:
    """Why the checkpoint or its tokenizer cannot be had from what is here and reachable, or None."""
    model = spec.model
    if model.startswith(HUB_PREFIX):
        name = model.removeprefix(HUB_PREFIX)
        if not name.endswith(SUFFIXES) or "/" in name:
            return (
                f"audio model {model!r}: expected laion-clap:FILE, a checkpoint file of the hub repo {HUB_REPO} "
                "(for example laion-clap:630k-audioset-best.pt)"
            )
        hub.go_offline_unless_hub_reachable()
        if hub_is_offline() and not hub.in_cache(HUB_REPO, name):
            return (
                f"audio model {model!r} is not in the local cache ({cache_location()}) and the hub is offline or "
                f"unreachable: fetch it once with network, or pass the path of the {name} file"
            )
        beside = None
    else:
        path = Path(model).expanduser()
        if not path.is_file():
            return f"audio model {model!r}: no such file (a laion_clap checkpoint, {'/'.join(SUFFIXES)})"
        beside = path.parent
    if _local_tokenizer(beside) is None:
        hub.go_offline_unless_hub_reachable()
        if hub_is_offline():
            return _no_tokenizer(model, beside)
    return None


def checkpoint_path(model: str) -> Path:
    """The checkpoint file: the path given, or ``laion-clap:NAME`` from the hub (cached after the first time)."""
    if not model.startswith(HUB_PREFIX):
        return Path(model).expanduser()
    hub.go_offline_unless_hub_reachable()
    return _download(HUB_REPO, model.removeprefix(HUB_PREFIX), f"audio model {model!r}")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights, read without running code from the file, ``module.`` prefixes removed."""
    if not path.is_file():
        raise ModelUnavailable(f"{path}: no such file (a laion_clap checkpoint, {'/'.join(SUFFIXES)})")
    try:
        # laion_clap's learning-rate schedule leaves a numpy scalar in the saved optimizer state: allow
        # rebuilding numpy scalars (a dtype and its bytes), and nothing else beyond torch's own safe set.
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch names what it refused in one of several phrasings, depending on why.
        needs = re.search(r"GLOBAL (\S+)|but got <class '([^']+)'>", str(exc))
        if needs is None:
            raise ModelUnavailable(f"{path}: not a file torch.save writes ({_reason(exc)})") from exc
        raise ModelUnavailable(
            f"{path}: the checkpoint holds a Python object ({needs.group(1) or needs.group(2)}) that only code "
            "can rebuild, and Sensorium reads checkpoints with torch.load(weights_only=True), which never runs "
            "code from a file. If you trust the file, keep only its weights (with the code that wrote it "
            f"importable): python -c \"import torch; c = torch.load('{path}', map_location='cpu', "
            f"weights_only=False); torch.save({{'state_dict': c['state_dict']}}, '{path.with_suffix('')}-weights.pt')\""
        ) from exc
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelUnavailable(
            f"{path}: cannot be read as a torch checkpoint; is it truncated or damaged? ({_reason(exc)})"
        ) from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelUnavailable(
            f"{path}: not a laion_clap checkpoint: expected a dict of tensors, or a dict with one under "
            f"'state_dict'; found {type(checkpoint).__name__}"
            + (f" with keys {sorted(map(str, checkpoint))[:6]}" if isinstance(checkpoint, dict) else "")
        )
    return {key.removeprefix("module."): value for key, value in state.items()}


def clap_model(state: dict[str, torch.Tensor], source: str) -> Any:
    """A transformers ClapModel holding the checkpoint's weights, every one of its own weights filled."""
    from transformers import ClapModel

    config = clap_config(state, source)
    renamed = rename(state)
    with torch.device("meta"):
        model = ClapModel(config)
    expected = dict(model.state_dict())
    made = {key: _made_buffer(key, expected[key]) for key in MADE_BY_CLAPMODEL}
    unfilled = sorted(set(expected) - set(renamed) - set(made))
    extra = sorted(set(renamed) - set(expected))
    if unfilled or extra:
        raise ModelUnavailable(
            f"{source}: the weights do not fit the architecture read from them ({_describe(config)}): "
            + "; ".join(
                part
                for part in (
                    f"{len(unfilled)} unfilled, such as {unfilled[:4]}" if unfilled else "",
                    f"{len(extra)} with no place, such as {extra[:4]}" if extra else "",
                )
                if part
            )
        )
    wrong = [key for key, value in renamed.items() if tuple(value.shape) != tuple(expected[key].shape)]
    if wrong:
        key = wrong[0]
        raise ModelUnavailable(
            f"{source}: {len(wrong)} weights of unexpected shape, such as {key} {tuple(renamed[key].shape)} "
            f"where {_describe(config)} has {tuple(expected[key].shape)}"
        )
    model.load_state_dict({**renamed, **made}, strict=True, assign=True)
    left = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if left:  # a tensor ClapModel makes outside its state_dict: this loader would need to make it too
        raise RuntimeError(f"ClapModel tensors without values after loading {source}: {left[:4]}")
    return model


def clap_config(state: dict[str, torch.Tensor], source: str) -> Any:
    """The ClapConfig of the towers the weights describe (HTS-AT tiny/base/large, fused or not; RoBERTa)."""
    from transformers import ClapConfig

    _check_family(state, source)
    embed = state["audio_branch.patch_embed.proj.weight"].shape
    stages = sorted({int(key.split(".")[2]) for key in state if key.startswith("audio_branch.layers.")})
    depths = [_count(state, f"audio_branch.layers.{stage}.blocks.") for stage in stages]
    tables = [state[f"audio_branch.layers.{stage}.blocks.0.attn.relative_position_bias_table"] for stage in stages]
    audio_width = state["audio_branch.norm.weight"].shape[0]
    fc1 = state["audio_branch.layers.0.blocks.0.mlp.fc1.weight"].shape
    audio = {
        "patch_embeds_hidden_size": embed[0],
        "patch_size": embed[-1],
        "patch_stride": [embed[-1], embed[-1]],
        "depths": depths,
        "num_attention_heads": [table.shape[1] for table in tables],
        "window_size": (round(tables[0].shape[0] ** 0.5) + 1) // 2,  # a (2w-1)² table of relative positions
        "hidden_size": audio_width,
        "mlp_ratio": fc1[0] / fc1[1],
        "num_mel_bins": state["audio_branch.bn0.weight"].shape[0],
        "enable_fusion": "audio_branch.patch_embed.mel_conv2d.weight" in state,
        "fusion_type": "aff_2d" if "audio_branch.patch_embed.mel_conv2d.weight" in state else None,
        "projection_dim": state["audio_projection.0.weight"].shape[0],
    }
    words = state["text_branch.embeddings.word_embeddings.weight"].shape
    text = {
        "vocab_size": words[0],
        "hidden_size": words[1],
        "num_attention_heads": words[1] // HEAD_WIDTH,
        "num_hidden_layers": _count(state, "text_branch.encoder.layer."),
        "intermediate_size": state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        "max_position_embeddings": state["text_branch.embeddings.position_embeddings.weight"].shape[0],
        "type_vocab_size": 1,
        "layer_norm_eps": 1e-5,  # RoBERTa's (ClapTextConfig's default is BERT's 1e-12)
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "projection_dim": state["text_projection.0.weight"].shape[0],
    }
    if audio_width != embed[0] * 2 ** (len(stages) - 1):
        raise ModelUnavailable(f"{source}: an HTS-AT audio tower {audio_width} wide cannot have {len(stages)} stages")
    return ClapConfig(text_config=text, audio_config=audio, projection_dim=audio["projection_dim"])


def rename(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """laion_clap's weight names to ClapModel's; an attention's fused ``qkv`` becomes ``query``, ``key``, ``value``."""
    renamed = {}
    for key, value in state.items():
        if UNUSED.match(key):
            continue
        name = key
        for old, new in RENAMES:
            name = name.replace(old, new)
        if ".attention.self.qkv." in name:
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0), strict=True):
                renamed[name.replace(".qkv.", f".{part}.")] = chunk
        else:
            renamed[name] = value
    return renamed


def laion_processor(fused: bool, tokenizer: tuple[Path, Path], vocab_size: int, source: str) -> Any:
    """laion_clap's audio features (48 kHz, 64 mel bands from 50 Hz to 14 kHz, 10 s windows) and tokenizer."""
    from transformers import ClapFeatureExtractor, ClapProcessor, RobertaTokenizer

    features = ClapFeatureExtractor(**{**LAION_FEATURES, "truncation": "fusion" if fused else "rand_trunc"})
    vocab, merges = tokenizer
    # transformers 5 builds an empty tokenizer from vocab_file=/merges_file= keywords: pass them positionally.
    tokens = RobertaTokenizer(str(vocab), str(merges), model_max_length=CONTEXT_LENGTH)
    if len(tokens) > vocab_size:
        raise ModelUnavailable(
            f"{source}: the tokenizer in {vocab.parent} has {len(tokens)} tokens and the checkpoint's text tower "
            f"{vocab_size}: it is not roberta-base's"
        )
    return ClapProcessor(feature_extractor=features, tokenizer=tokens)


def check_mel_filters(state: dict[str, torch.Tensor], features: Any, source: str) -> None:
    """The checkpoint's own mel filterbank (laion builds it from its audio settings) must be the extractor's."""
    stored = state.get("audio_branch.logmel_extractor.melW")
    if stored is None:
        return
    ours = np.asarray(features.mel_filters_slaney, dtype=np.float32)
    theirs = stored.float().numpy()
    if theirs.shape != ours.shape or not np.allclose(theirs, ours, rtol=1e-4, atol=1e-6 * float(ours.max())):
        raise ModelUnavailable(
            f"{source}: the checkpoint's mel filterbank {theirs.shape} is not laion_clap's standard one "
            "(48 kHz, 1024-point FFT, 64 bands, 50 to 14000 Hz), the only audio settings Sensorium reads it with"
        )


def tokenizer_files(checkpoint: Path) -> tuple[Path, Path]:
    """roberta-base's vocab.json and merges.txt: beside the checkpoint, in the hub cache, or downloaded."""
    found = _local_tokenizer(checkpoint.parent)
    if found is not None:
        return found
    hub.go_offline_unless_hub_reachable()
    if hub_is_offline():
        raise ModelUnavailable(_no_tokenizer(str(checkpoint), checkpoint.parent))
    vocab, merges = (_download(TOKENIZER_REPOS[0], name, "the roberta-base tokenizer") for name in TOKENIZER_FILES)
    return vocab, merges


def _download(repo: str, filename: str, what: str) -> Path:
    import httpx
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except (OSError, ValueError, httpx.HTTPError) as exc:  # the hub client's errors: OSError, httpx's its own
        raise ModelUnavailable(f"{what}: cannot fetch {filename} from the hub repo {repo}: {exc}") from exc


def _local_tokenizer(beside: Path | None) -> tuple[Path, Path] | None:
    from huggingface_hub import try_to_load_from_cache

    if beside is not None:
        vocab, merges = (beside / TOKENIZER_FOLDER / name for name in TOKENIZER_FILES)
        if vocab.is_file() and merges.is_file():
            return vocab, merges
    for repo in TOKENIZER_REPOS:
        cached = [try_to_load_from_cache(repo, name) for name in TOKENIZER_FILES]
        if all(isinstance(path, str) for path in cached):
            return Path(str(cached[0])), Path(str(cached[1]))
    return None


def _no_tokenizer(model: str, beside: Path | None) -> str:
    folder = beside / TOKENIZER_FOLDER if beside is not None else Path(TOKENIZER_FOLDER)
    return (
        f"audio model {model!r} needs roberta-base's tokenizer (vocab.json and merges.txt), which is not in "
        f"{folder} nor in the local cache ({cache_location()}), and the hub is offline or unreachable: on a "
        f"machine with network, `hf download {TOKENIZER_REPOS[0]} vocab.json merges.txt "
        f"--local-dir {folder}`, then copy that folder here"
    )


def _check_family(state: dict[str, torch.Tensor], source: str) -> None:
    if not any(key.startswith("audio_branch.") for key in state):
        looks = " (it looks like an open_clip image-text model)" if any(k.startswith("visual.") for k in state) else ""
        raise ModelUnavailable(
            f"{source}: not a laion_clap CLAP checkpoint{looks}: expected audio_branch.* and text_branch.* "
            f"weights, found {len(state)} tensors such as {sorted(state)[:3]}"
        )
    if "audio_branch.patch_embed.proj.weight" not in state:
        raise ModelUnavailable(f"{source}: the audio tower is not HTS-AT (PANN towers are not supported)")
    types = state.get("text_branch.embeddings.token_type_embeddings.weight")
    if "text_branch.embeddings.word_embeddings.weight" not in state or types is None or types.shape[0] != 1:
        raise ModelUnavailable(
            f"{source}: the text tower is not RoBERTa (BERT, BART and CLIP towers are not supported)"
        )
    for key in ("audio_branch.norm.weight", "audio_branch.bn0.weight", "audio_projection.0.weight"):
        if key not in state:
            raise ModelUnavailable(f"{source}: an incomplete laion_clap checkpoint: no {key}")


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return 1 + max(int(key[len(prefix) :].split(".")[0]) for key in state if key.startswith(prefix))


def _made_buffer(key: str, like: torch.Tensor) -> torch.Tensor:
    # RoBERTa's position and token-type index buffers, as ClapTextEmbeddings builds them.
    if key.endswith("position_ids"):
        return torch.arange(like.shape[-1]).expand(like.shape).clone()
    return torch.zeros(like.shape, dtype=like.dtype)


def _describe(config: Any) -> str:
    audio = config.audio_config
    fused = "fused" if audio.enable_fusion else "unfused"
    layers = config.text_config.num_hidden_layers
    return f"HTS-AT {audio.patch_embeds_hidden_size} wide, depths {audio.depths}, {fused}; RoBERTa, {layers} layers"


def _numpy_scalar_globals() -> list[Any]:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # type: ignore[attr-defined]
    scalar = multiarray.scalar
    # Files written under numpy 1 name it by its old module path.
    dtypes = {type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"}  # numpy 2 pickles a dtype by its class
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, *dtypes]


def _reason(exc: BaseException) -> str:
    """torch's own words for what went wrong, without its general advice around them."""
    general = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(general)]
    return (specific or lines or [type(exc).__name__])[0].split(". ")[0]
