"""``sensorium models``: the catalog (server/catalog.py) as a table for people or one JSON document for programs.

Rows are printed as they are found: offline, each architecture's size estimate takes a moment to count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TextIO

from . import catalog, hub
from .catalog import Entry, Size


@dataclass(frozen=True)
class Row:
    entry: Entry
    cached: bool
    size: Size

    def as_json(self) -> dict[str, Any]:
        entry = self.entry
        return {
            "modality": entry.modality,
            "family": entry.family,
            "model": entry.model,
            "pretrained": entry.pretrained,
            "default": entry.is_default,
            "loadable": entry.loadable,
            "cached": self.cached,
            "size_bytes": self.size.bytes,
            "size_source": self.size.source,
            "repo": entry.repo,
            "weights": list(entry.weights),  # the first of these the repo has
            "url": entry.url,
            "architecture": entry.architecture,
            "flags": list(entry.flags),
        }


def rows(entries: list[Entry], listings: dict[str, dict[str, int]], only_cached: bool = False) -> Iterator[Row]:
    """Each entry with what is known of it, one at a time (an estimate takes a moment)."""
    for entry in entries:
        here = catalog.cached(entry)
        if here or not only_cached:
            yield Row(entry, here, catalog.size(entry, listings))


def list_models(out: TextIO, *, every: bool = False, only_cached: bool = False, as_json: bool = False) -> int:
    """``sensorium models``: a table (or JSON) of the models, their sizes, whether each is cached, how to use it."""
    hub.go_offline_unless_hub_reachable()
    offline = hub.hub_is_offline()
    entries = catalog.catalog(every)
    shown = entries if every else [entry for entry in entries if entry.loadable]
    listings = {} if offline else catalog.hub_listings(entry.repo for entry in shown if entry.repo)
    found = rows(shown, listings, only_cached)
    if as_json:
        models = [row.as_json() for row in found]
        json.dump({"offline": offline, "cache": hub.cache_location(), "models": models}, out, indent=2)
        out.write("\n")
        return 0
    modality = None
    for row in found:  # printed as they come: estimates offline take a moment each
        if row.entry.modality != modality:
            out.write("" if modality is None else "\n")
            modality = row.entry.modality
            out.write(f"{modality} models\n  {'family':<12} {'size':>9}  cached  use\n")
        out.write(_line(row) + "\n")
        out.flush()
    if modality is None:
        out.write("no model of the catalog is in the local cache\n" if only_cached else "no models\n")
    out.write("\n" + _notes(offline, every, entries, shown))
    return 0


def _line(row: Row) -> str:
    entry = row.entry
    mark = "*" if entry.is_default else " "
    loads = "" if entry.loadable else f"  (this version cannot load {entry.family} models)"
    here = "yes" if row.cached else "no"
    return f"{mark} {entry.family:<12} {row.size.text():>9}  {here:<6}  {' '.join(entry.flags)}{loads}"


def _notes(offline: bool, every: bool, entries: list[Entry], shown: list[Entry]) -> str:
    sizes = (
        "sizes: ~ is an estimate, 4 bytes per parameter (the hub is offline or unreachable); cached models show "
        "their size on disk"
        if offline
        else "sizes: the hub's, of the files loading fetches"
    )
    notes = ["* the default", sizes, f"cache: {hub.cache_location()}"]
    if offline and any(entry.family == "laion_clap" for entry in shown):
        notes.append("laion_clap .pt files may hold training state besides the weights: expect more than ~")
    if not every:
        families = sorted({entry.family for entry in entries if entry not in shown})
        more = f"models of families this version cannot load ({', '.join(families)}) and " if families else ""
        notes.append(f"`sensorium models --all` adds {more}every open_clip pretrained tag")
    notes.append(
        "any open_clip hf-hub:org/repo, local-dir:/folder or save_pretrained folder works too (docs/models.md)"
    )
    return "".join(note + "\n" for note in notes)
