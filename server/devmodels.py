"""Random-weight checkpoints written in the same formats real ones use.

They load through exactly the code that loads real weights (open_clip's ``local-dir:``, transformers'
``from_pretrained``), so tests and benchmarks exercise the product offline. Their scores mean nothing;
their timings are real for the architecture chosen. Each library's own tokenizer class is used with a
vocabulary made here (CLIP's real one, from open_clip's bundled BPE merges), since none can be downloaded.
"""

from __future__ import annotations

import copy
import gzip
import io
import json
import math
from pathlib import Path
from typing import Any

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    # open_clip's built-in tokenizer has 49408 tokens; the text tower must match it.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

# SigLIP's shape in miniature, as open_clip builds SigLIP (ViT-B-16-SigLIP.json): a CustomTextCLIP with
# a learned logit bias, timm's attention-pooled ViT, a bidirectional text tower pooled at its last position.
TINY_OPEN_CLIP_SIGLIP: dict[str, Any] = {
    "embed_dim": 64,
    "init_logit_bias": -10,
    "custom_text": True,
    "vision_cfg": {
        "image_size": 224,  # SigLIP's own; timm's test ViT is small enough at that size
        "timm_model_name": "test_vit",
        "timm_model_pretrained": False,
        "timm_pool": "map",
        "timm_proj": "none",
    },
    "text_cfg": {
        "context_length": 64,
        "vocab_size": 0,  # the tokenizer's, set when it is made
        "hf_tokenizer_name": "sensorium/tiny-siglip",  # local-dir: reads the tokenizer from the folder instead
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "width": 64,
        "heads": 2,
        "layers": 2,
        "no_causal_mask": True,
        "proj_bias": True,
        "pool_type": "last",
        "norm_kwargs": {"eps": 1e-6},
    },
}
# open_clip's pretrained config for SigLIP weights (pretrained.py, _slpcfg).
SIGLIP_PREPROCESS = {
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bicubic",
    "resize_mode": "squash",
}

# Both towers of the transformers dev models; vision adds TINY_HF_PATCHES and its image size or patch count.
TINY_HF_TOWER = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
TINY_HF_PATCHES = {"patch_size": 16}

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)

TINY_CLAP_TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
TINY_CLAP_AUDIO = {
    "hidden_size": 64,
    "depths": [1, 1],
    "num_attention_heads": [2, 2],
    "patch_embeds_hidden_size": 32,
    "window_size": 8,
    "spec_size": 256,
    "num_mel_bins": 64,
}
# laion's CLAP feature extractor settings; the transformers class defaults differ (frequency_min=0).
LAION_FEATURES: dict[str, Any] = {
    "feature_size": 64,
    "sampling_rate": 48000,
    "hop_length": 480,
    "max_length_s": 10,
    "fft_window_size": 1024,
    "frequency_min": 50,
    "frequency_max": 14000,
    "padding": "repeatpad",
    "truncation": "rand_trunc",
}

TOKENIZER_CORPUS = (
    "This is a sound of {}. a photo of a {}. speech music singing dog barking cat meowing bird "
    "door knock alarm siren typing keyboard water running rain traffic car engine footsteps "
    "applause laughter baby crying telephone ringing silence wind thunder guitar piano drums"
)


def write_open_clip(out: Path, arch: str = "tiny", seed: int = 0) -> Path:
    """A ``local-dir:`` open_clip folder: open_clip_config.json plus random weights.

    ``arch``: "tiny", "tiny-siglip" (a SigLIP-shaped CustomTextCLIP: timm's test ViT with attention pooling, a
    bidirectional text tower pooled at its last position, a learned logit bias) or an open_clip built-in name
    (ViT-B-32, ViT-B-16-SigLIP, ...). Models whose config names a Hugging Face tokenizer get a small sentencepiece
    one (as SigLIP's) in the folder, where open_clip's ``local-dir:`` looks for it.
    """
    import open_clip
    import torch

    model_cfg = {"tiny": TINY_CLIP, "tiny-siglip": TINY_OPEN_CLIP_SIGLIP}.get(arch) or open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    model_cfg = copy.deepcopy(model_cfg)
    out.mkdir(parents=True, exist_ok=True)
    text_cfg = model_cfg["text_cfg"]
    if text_cfg.get("hf_tokenizer_name"):
        tokenizer = _sentencepiece_tokenizer(out, model_max_length=text_cfg.get("context_length", 64))
        tokenizer.save_pretrained(out)
        text_cfg["vocab_size"] = max(text_cfg["vocab_size"], len(tokenizer))
    custom_text = model_cfg.pop("custom_text", False)
    torch.manual_seed(seed)
    model = (open_clip.CustomTextCLIP if custom_text else open_clip.CLIP)(**model_cfg)
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")
    siglip = "init_logit_bias" in model_cfg
    preprocess_cfg = SIGLIP_PREPROCESS if siglip else {"mean": OPENAI_MEAN, "std": OPENAI_STD}
    written = {**model_cfg, "custom_text": True} if custom_text else model_cfg
    config = {"model_cfg": written, "preprocess_cfg": preprocess_cfg}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return out


def write_hf_clip(out: Path, seed: int = 0) -> Path:
    """A transformers CLIP folder as ``CLIPModel.save_pretrained`` + ``CLIPProcessor.save_pretrained`` write it."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _clip_tokenizer(out)
    text = {**TINY_HF_TOWER, **_special_ids(tokenizer), "max_position_embeddings": 77}
    config = CLIPConfig(
        text_config=text, vision_config={**TINY_HF_TOWER, **TINY_HF_PATCHES, "image_size": 64}, projection_dim=32
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(out)
    images = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return out


def write_siglip(out: Path, seed: int = 0) -> Path:
    """A transformers SigLIP folder (``SiglipModel`` + ``SiglipProcessor``, a sentencepiece tokenizer as
    google/siglip-* have), with a fixed 64x64 input."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _sentencepiece_tokenizer(out, model_max_length=64)
    text = {**TINY_HF_TOWER, **_special_ids(tokenizer), "max_position_embeddings": 64}
    config = SiglipConfig(text_config=text, vision_config={**TINY_HF_TOWER, **TINY_HF_PATCHES, "image_size": 64})
    torch.manual_seed(seed)
    model = SiglipModel(config)
    _set_sigmoid_constants(model)
    model.save_pretrained(out)
    images = SiglipImageProcessor(size={"height": 64, "width": 64})
    SiglipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return out


def write_siglip2(out: Path, seed: int = 0) -> Path:
    """A transformers SigLIP 2 NaFlex folder (``Siglip2Model`` + ``Siglip2Processor``): pictures are resized to at
    most 256 patches of 16 pixels (as google's NaFlex checkpoints, and the default
    Siglip2Processor applies whatever the image processor says), keeping their aspect ratio."""
    import torch
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _gemma_style_tokenizer()
    text = {**TINY_HF_TOWER, **_special_ids(tokenizer), "max_position_embeddings": 64}
    config = Siglip2Config(text_config=text, vision_config={**TINY_HF_TOWER, **TINY_HF_PATCHES, "num_patches": 16})
    torch.manual_seed(seed)
    model = Siglip2Model(config)
    _set_sigmoid_constants(model)
    model.save_pretrained(out)
    images = Siglip2ImageProcessor(patch_size=16, max_num_patches=256)
    Siglip2Processor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return out


def _set_sigmoid_constants(model: Any) -> None:
    # transformers initializes both to 0; these keep a random model's scores away from 0 and 1 (real
    # checkpoints learn about log(110) and -16).
    import torch

    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-1.0)


def _special_ids(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _clip_tokenizer(out: Path) -> Any:
    """transformers' CLIPTokenizer with OpenAI's own vocabulary, rebuilt from the BPE merges open_clip ships."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    from transformers import CLIPTokenizer

    # As OpenAI's (and open_clip's SimpleTokenizer) build it: bytes, bytes ending a word, merges, specials.
    with gzip.open(default_bpe(), "rt", encoding="utf-8") as file:
        merges = file.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    byte_tokens = list(bytes_to_unicode().values())
    vocab = [*byte_tokens, *(token + "</w>" for token in byte_tokens), *("".join(m.split()) for m in merges)]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(vocab)}))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    # transformers 5 builds an empty tokenizer from vocab_file=/merges_file= keywords: pass them positionally.
    return _checked(CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77))


def _sentencepiece_tokenizer(out: Path, model_max_length: int) -> Any:
    """SiglipTokenizer (sentencepiece, as google/siglip-* and timm's SigLIP repos have) trained here."""
    import sentencepiece
    from transformers import SiglipTokenizer

    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([TOKENIZER_CORPUS] * 20),
        model_writer=model,
        vocab_size=400,
        hard_vocab_limit=False,  # as many pieces as the small corpus gives
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    (out / "spiece.model").write_bytes(model.getvalue())
    return _checked(SiglipTokenizer(str(out / "spiece.model"), model_max_length=model_max_length), at_least=50)


def _gemma_style_tokenizer() -> Any:
    """Siglip2Tokenizer (Gemma's byte-fallback BPE, lower-cased) over the corpus's characters and raw bytes."""
    from transformers import Siglip2Tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    pieces = sorted(set(TOKENIZER_CORPUS.lower().replace(" ", "\u2581")))
    byte_pieces = [f"<0x{value:02X}>" for value in range(256)]
    vocab = {piece: index for index, piece in enumerate([*specials, *byte_pieces, *pieces])}
    return _checked(Siglip2Tokenizer(vocab=vocab, merges=[], model_max_length=64))


def _checked(tokenizer: Any, at_least: int = 100) -> Any:
    if len(tokenizer) < at_least:  # transformers 5 can silently build an empty tokenizer
        raise RuntimeError(f"{type(tokenizer).__name__} came out with only {len(tokenizer)} tokens")
    return tokenizer


def write_roberta_bpe(out: Path) -> None:
    """A small byte-level BPE vocabulary with RoBERTa's special tokens: vocab.json and merges.txt in ``out``."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [TOKENIZER_CORPUS] * 20,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(out))


def write_clap(out: Path, arch: str = "tiny", seed: int = 0) -> Path:
    """A CLAP folder as ``save_pretrained`` writes it, with a byte-level BPE tokenizer trained here."""
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    write_roberta_bpe(out)
    # transformers 5 builds an empty tokenizer from vocab_file=/merges_file= keywords: pass them positionally.
    tokenizer = RobertaTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), model_max_length=77)
    if len(tokenizer) < 100:
        raise RuntimeError(f"tokenizer came out with only {len(tokenizer)} tokens")
    special = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "max_position_embeddings": 80,
    }
    if arch == "tiny":
        config = ClapConfig(
            text_config={**TINY_CLAP_TEXT, **special, "projection_dim": 16},
            audio_config={**TINY_CLAP_AUDIO, "projection_dim": 16},
            projection_dim=16,
        )
    elif arch == "htsat":
        config = ClapConfig(text_config={**special, "max_position_embeddings": 514})
    else:
        raise ValueError(f"unknown CLAP architecture {arch!r} (tiny or htsat)")
    torch.manual_seed(seed)
    ClapModel(config).save_pretrained(out)
    processor = ClapProcessor(feature_extractor=ClapFeatureExtractor(**LAION_FEATURES), tokenizer=tokenizer)
    processor.save_pretrained(out)
    return out


# --image-family of `sensorium dev-models`: the writer of each image format, and how --image-model names its folder.
IMAGE_FAMILIES: dict[str, tuple[Any, str]] = {
    "open_clip": (lambda out, arch: write_open_clip(out, arch), "local-dir:{}"),
    "open_clip-siglip": (lambda out, arch: write_open_clip(out, "tiny-siglip"), "local-dir:{}"),
    "transformers-clip": (lambda out, arch: write_hf_clip(out), "{}"),
    "siglip": (lambda out, arch: write_siglip(out), "{}"),
    "siglip2": (lambda out, arch: write_siglip2(out), "{}"),
}


def write_dev_models(
    out: Path, image_arch: str = "tiny", audio_arch: str = "tiny", image_family: str = "open_clip"
) -> dict[str, Path]:
    writer, _ = IMAGE_FAMILIES[image_family]
    return {
        "image": writer(out / "image", image_arch),
        "audio": write_clap(out / "audio", audio_arch),
    }


def image_model_flag(image_family: str, folder: Path) -> str:
    """What --image-model takes to serve a folder written for ``image_family``."""
    return IMAGE_FAMILIES[image_family][1].format(folder)
