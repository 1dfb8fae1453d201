"""Model sources: the Hugging Face hub, its local cache, or a local folder, and failing fast offline."""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request

log = logging.getLogger("sensorium.models")

PROBE_TIMEOUT_S = 3.0


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded; the message says how to provide it."""


def hub_is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def go_offline_unless_hub_reachable() -> None:
    """Use the local cache only when the hub cannot be reached.

    The hub client retries an unreachable host with backoff for about half a minute per
    file; one short probe up front turns that into a prompt, clear failure.
    """
    if hub_is_offline():
        return
    from huggingface_hub import constants

    request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # the host answered: it is reachable
    except (urllib.error.URLError, OSError) as exc:
        log.warning("%s is unreachable (%s); using the local model cache only", constants.ENDPOINT, exc)
        constants.HF_HUB_OFFLINE = True
        os.environ["HF_HUB_OFFLINE"] = "1"


def cache_location() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def folder_or_hub_id_problem(what: str, model: str, folder_needs: str) -> str | None:
    """What is wrong with the spelling of a transformers model given as a ``save_pretrained`` folder or an
    ``org/name`` hub id: a folder without config.json, or a path that is no folder. None: go on."""
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            return f"{what} {model!r}: the folder has no config.json ({folder_needs})"
        return None
    if os.path.isabs(model) or model.startswith((".", "~")) or model.count("/") > 1:
        return f"{what} {model!r}: no such folder"
    return None


def in_cache(repo_id: str, filename: str) -> bool:
    """Whether the hub cache holds ``filename`` of ``repo_id`` (no network)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, filename), str)


DEV_MODELS_HINT = (
    "To try Sensorium with no download at all: `sensorium dev-models /tmp/sensorium-models` writes small "
    "random-weight models, then `sensorium serve --image-model local-dir:/tmp/sensorium-models/image "
    "--audio-model /tmp/sensorium-models/audio`"
)
