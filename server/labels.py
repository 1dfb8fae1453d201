"""Label files, Sans-I/O: text in, labels with their prompts, groups and event settings out.

Format (labels/README.md has the full story)::

    # a comment; blank lines are ignored
    @template a photo of a {}.          # the file's own template(s), replacing the default
    @template a close-up photo of a {}.
    @events start=3 end=1.5 hold=2       # event settings for every label of the file
    dog                                  # label; prompts come from the templates
    cat = a photo of a cat. | a kitten.  # label with its own prompts
    @group vehicles [start=4]            # the labels below belong to "vehicles" (its own event: start 4)
    car [min=0.5 hold=3]                 # the label's own event settings, over the file's
    bus [off] = a photo of a bus.        # no events for this label

A labels directory is several such files: each file's labels are in the group named after the file
(``animals.txt``: ``animals``) unless an ``@group`` line says otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from .events import EventThresholds

DEFAULT_TEMPLATES = {
    "image": ("a photo of a {}.",),
    "audio": ("This is a sound of {}.",),
}

# The words of an event setting, and the EventThresholds field each one sets.
EVENT_KEYS = {"start": "start", "end": "end", "min": "min_seconds", "hold": "hold_seconds"}
_KNOWN_SETTINGS = "start=, end=, min=, hold=, off, on"
_NOTHING_SET = EventThresholds()


class LabelFileError(ValueError):
    """A label file that cannot be used; the last good label set stays in service."""


@dataclass(frozen=True)
class Label:
    name: str
    prompts: tuple[str, ...]
    group: str | None = None
    thresholds: EventThresholds | None = None  # the label's own settings over its file's; None: nothing set


@dataclass(frozen=True)
class ParsedLabels:
    labels: tuple[Label, ...]
    warnings: tuple[str, ...]
    group_thresholds: Mapping[str, EventThresholds] = field(default_factory=dict)  # groups with settings only

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


@dataclass
class _Entry:
    """A label line, before the file's templates and settings (which may come later in it) are known."""

    name: str
    prompts: tuple[str, ...] | None
    own: EventThresholds
    group: str | None
    line: int


@dataclass
class _File:
    entries: list[_Entry] = field(default_factory=list)
    templates: list[str] = field(default_factory=list)
    events: EventThresholds = _NOTHING_SET  # the merged @events lines
    group_options: dict[str, tuple[EventThresholds, int]] = field(default_factory=dict)  # @group [...], its line


def parse_label_bytes(data: bytes, default_templates: tuple[str, ...]) -> ParsedLabels:
    return parse_label_text(_decode(data), default_templates)


def parse_label_text(text: str, default_templates: tuple[str, ...], *, label_options: bool = True) -> ParsedLabels:
    """One label file. ``label_options=False`` reads ``[...]`` after a name as part of it (request labels)."""
    labels, groups = _resolve(_parse_file(text, None, label_options), default_templates)
    if not labels:
        raise LabelFileError("no labels (the file is empty or only has comments)")
    return _merge([("", labels, groups, [])])


def parse_label_files(files: Sequence[tuple[str, bytes]], default_templates: tuple[str, ...]) -> ParsedLabels:
    """A labels directory: (file name, contents) in the order they count; each file's stem is its group."""
    if not files:
        raise LabelFileError("no *.txt files in the directory (labels/README.md describes the format)")
    parsed = []
    for name, data in files:
        try:
            labels, groups = _resolve(_parse_file(_decode(data), PurePath(name).stem, True), default_templates)
        except LabelFileError as exc:
            raise LabelFileError(f"{name}: {exc}") from None
        parsed.append((name, labels, groups, [] if labels else ["no labels in this file"]))
    merged = _merge(parsed)
    if not merged.labels:
        raise LabelFileError("no labels in any of the directory's *.txt files")
    return merged


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelFileError(f"not valid UTF-8 (byte {exc.start}): {exc.reason}") from exc


def _parse_file(text: str, group: str | None, label_options: bool) -> _File:
    out = _File()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if not line.startswith("@"):
            name, prompts, own = _parse_label_line(line, number, label_options)
            out.entries.append(_Entry(name, prompts, own, group, number))
            continue
        keyword, value = (*line.split(maxsplit=1), "")[:2]
        if keyword == "@template":
            out.templates.append(_parse_template(value.strip(), number))
        elif keyword == "@events":
            out.events = _parse_options(value, number).over(out.events)  # a later @events line wins
            _check(out.events, number, "the file's @events")
        elif keyword == "@group":
            group = _parse_group(value, number, out)
        else:
            raise LabelFileError(
                f"line {number}: unknown directive {keyword!r} (@template, @events and @group are known)"
            )
    return out


def _resolve(
    parsed: _File, default_templates: tuple[str, ...]
) -> tuple[list[tuple[Label, int]], dict[str, EventThresholds]]:
    """One file's labels (with their lines) and its groups' settings, now that the whole file is read."""
    templates = tuple(parsed.templates) or default_templates
    labels = []
    for entry in parsed.entries:
        settings = entry.own.over(parsed.events)
        _check(settings, entry.line, f"{entry.name!r} (its own settings over the file's @events)")
        prompts = entry.prompts if entry.prompts is not None else tuple(t.replace("{}", entry.name) for t in templates)
        label = Label(entry.name, prompts, entry.group, None if settings == _NOTHING_SET else settings)
        labels.append((label, entry.line))
    groups: dict[str, EventThresholds] = {}
    for group in dict.fromkeys(label.group for label, _ in labels if label.group is not None):
        own, line = parsed.group_options.get(group, (_NOTHING_SET, 0))
        settings = own.over(parsed.events)
        _check(settings, line, f"group {group!r} (its @group settings over the file's @events)")
        if settings != _NOTHING_SET:
            groups[group] = settings
    return labels, groups


def _merge(files: list[tuple[str, list[tuple[Label, int]], dict[str, EventThresholds], list[str]]]) -> ParsedLabels:
    """The files' labels in order; a name already taken (case-insensitively) is dropped with a warning, and
    a group takes its settings from the first file that has labels in it."""
    labels: list[Label] = []
    warnings: list[str] = []
    seen: dict[str, tuple[str, int]] = {}
    group_thresholds: dict[str, EventThresholds] = {}
    group_owner: dict[str, str] = {}
    for file, file_labels, file_groups, file_warnings in files:
        prefix = f"{file}: " if file else ""
        warnings += [f"{prefix}{warning}" for warning in file_warnings]
        for label, line in file_labels:
            key = label.name.casefold()
            if key in seen:
                first_file, first_line = seen[key]
                first = f"line {first_line}" if first_file == file else f"{first_file} line {first_line}"
                warnings.append(f"{prefix}line {line}: duplicate label {label.name!r} (first on {first}) dropped")
                continue
            seen[key] = (file, line)
            labels.append(label)
        for group in dict.fromkeys(label.group for label, _ in file_labels if label.group is not None):
            if group not in group_owner:
                group_owner[group] = file
                if group in file_groups:
                    group_thresholds[group] = file_groups[group]
            elif group in file_groups and file_groups[group] != group_thresholds.get(group):
                warnings.append(
                    f"{prefix}group {group!r} has other event settings in {group_owner[group]}, "
                    "the first file with the group: those count"
                )
    return ParsedLabels(labels=tuple(labels), warnings=tuple(warnings), group_thresholds=group_thresholds)


def _strip_comment(line: str) -> str:
    # '#' starts a comment anywhere, so labels cannot contain '#'; that keeps the rule one line long.
    return line.split("#", 1)[0]


def _parse_template(template: str, number: int) -> str:
    if template.count("{}") != 1:
        raise LabelFileError(f"line {number}: a template needs exactly one '{{}}' for the label: {template!r}")
    return template


def _parse_group(value: str, number: int, out: _File) -> str:
    name, options, after = _bracketed(value, number)
    if after:
        raise LabelFileError(f"line {number}: nothing may follow the [...] settings of @group, not {after!r}")
    name = " ".join(name.split())
    if not name:
        raise LabelFileError(f"line {number}: @group needs a name")
    if "]" in name:
        raise LabelFileError(f"line {number}: ']' without '[' in the group name {name!r}")
    if options is not None:
        own = _parse_options(options, number)
        _check(own, number, f"group {name!r}")
        earlier, first_line = out.group_options.get(name, (_NOTHING_SET, number))
        out.group_options[name] = (own.over(earlier), first_line)
    return name


def _parse_label_line(
    line: str, number: int, label_options: bool
) -> tuple[str, tuple[str, ...] | None, EventThresholds]:
    own = _NOTHING_SET
    bracket, equals = line.find("["), line.find("=")
    if label_options and bracket != -1 and (equals == -1 or bracket < equals):
        name, options, after = _bracketed(line, number)
        if after and not after.startswith("="):
            raise LabelFileError(f"line {number}: after the [...] settings only '= prompts' may follow, not {after!r}")
        own = _parse_options(options or "", number)
        _check(own, number, "the label's settings")
        line = f"{name} {after}"  # back to the plain 'name = prompts' form
    name, equals_sign, rest = line.partition("=")
    name = " ".join(name.split())
    if label_options and "]" in name:
        raise LabelFileError(f"line {number}: ']' without '[' in {name!r}")
    if not name:
        raise LabelFileError(f"line {number}: a label is missing before {'[' if bracket == 0 else '='!r}")
    if not equals_sign:
        return name, None, own
    prompts = tuple(p.strip() for p in rest.split("|") if p.strip())
    if not prompts:
        raise LabelFileError(f"line {number}: label {name!r} has '=' but no prompts after it")
    return name, prompts, own


def _bracketed(text: str, number: int) -> tuple[str, str | None, str]:
    """``name [options] rest`` into its three parts; the options are None without brackets."""
    bracket = text.find("[")
    if bracket == -1:
        return text, None, ""
    close = text.find("]", bracket)
    if close == -1:
        raise LabelFileError(f"line {number}: '[' without ']' (event settings go in [...] after the name)")
    return text[:bracket], text[bracket + 1 : close], text[close + 1 :].strip()


def _parse_options(text: str, number: int) -> EventThresholds:
    """``start=3 end=1.5 min=1 hold=2 off`` (any subset, spaces or commas between) into settings."""
    values: dict[str, Any] = {}
    for token in re.sub(r"\s*=\s*", "=", text).replace(",", " ").split():
        if token in ("off", "on"):
            values["enabled"] = token == "on"
            continue
        key, equals, raw = token.partition("=")
        if not equals or key not in EVENT_KEYS:
            raise LabelFileError(f"line {number}: unknown event setting {token!r} (known: {_KNOWN_SETTINGS})")
        try:
            values[EVENT_KEYS[key]] = float(raw)
        except ValueError:
            raise LabelFileError(f"line {number}: {key} needs a number, got {raw!r}") from None
    return EventThresholds(**values)


def _check(settings: EventThresholds, number: int, what: str) -> None:
    try:
        settings.check()
    except ValueError as exc:
        raise LabelFileError(f"line {number}: {what}: {exc}") from None
