"""Random-weight checkpoints written in the same formats real ones use.

They load through exactly the code that loads real weights (open_clip's ``local-dir:`` and
``ClapModel.from_pretrained``), so tests and benchmarks exercise the product offline. Their
scores mean nothing; their timings are real for the architecture chosen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TINY_CLIP: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    # open_clip's built-in tokenizer has 49408 tokens; the text tower must match it.
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

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
    """A ``local-dir:`` open_clip folder: open_clip_config.json plus random weights."""
    import open_clip
    import torch

    model_cfg = TINY_CLIP if arch == "tiny" else open_clip.get_model_config(arch)
    if model_cfg is None:
        raise ValueError(f"unknown open_clip architecture {arch!r}")
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    torch.save(model.state_dict(), out / "open_clip_pytorch_model.bin")
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}
    (out / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return out


def write_clap(out: Path, arch: str = "tiny", seed: int = 0) -> Path:
    """A CLAP folder as ``save_pretrained`` writes it, with a byte-level BPE tokenizer trained here."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor, RobertaTokenizer

    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [TOKENIZER_CORPUS] * 20,
        vocab_size=400,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(out))
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


def write_dev_models(out: Path, image_arch: str = "tiny", audio_arch: str = "tiny") -> dict[str, Path]:
    return {
        "image": write_open_clip(out / "image", image_arch),
        "audio": write_clap(out / "audio", audio_arch),
    }
