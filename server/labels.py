"""Label files, Sans-I/O: text in, labels with their prompts out.

Format (labels/README.md has the full story)::

    # a comment; blank lines are ignored
    @template a photo of a {}.          # the file's own template(s), replacing the default
    @template a close-up photo of a {}.
    dog                                  # label; prompts come from the templates
    cat = a photo of a cat. | a kitten.  # label with its own prompts
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TEMPLATES = {
    "image": ("a photo of a {}.",),
    "audio": ("This is a sound of {}.",),
}


class LabelFileError(ValueError):
    """A label file that cannot be used; the last good label set stays in service."""


@dataclass(frozen=True)
class Label:
    name: str
    prompts: tuple[str, ...]


@dataclass(frozen=True)
class ParsedLabels:
    labels: tuple[Label, ...]
    warnings: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)


def parse_label_bytes(data: bytes, default_templates: tuple[str, ...]) -> ParsedLabels:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LabelFileError(f"not valid UTF-8 (byte {exc.start}): {exc.reason}") from exc
    return parse_label_text(text, default_templates)


def parse_label_text(text: str, default_templates: tuple[str, ...]) -> ParsedLabels:
    templates: list[str] = []
    entries: list[tuple[str, tuple[str, ...] | None]] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).strip()
        if not line:
            continue
        if line.startswith("@"):
            templates.append(_parse_directive(line, number))
            continue
        name, prompts = _parse_label_line(line, number)
        key = name.casefold()
        if key in seen:
            warnings.append(f"line {number}: duplicate label {name!r} (first on line {seen[key]}) dropped")
            continue
        seen[key] = number
        entries.append((name, prompts))
    if not entries:
        raise LabelFileError("no labels (the file is empty or only has comments)")
    chosen = tuple(templates) or default_templates
    labels = tuple(
        Label(name, prompts if prompts is not None else tuple(t.replace("{}", name) for t in chosen))
        for name, prompts in entries
    )
    return ParsedLabels(labels=labels, warnings=tuple(warnings))


def _strip_comment(line: str) -> str:
    # '#' starts a comment anywhere, so labels cannot contain '#'; that keeps the rule one line long.
    return line.split("#", 1)[0]


def _parse_directive(line: str, number: int) -> str:
    keyword, _, value = line.partition(" ")
    if keyword != "@template":
        raise LabelFileError(f"line {number}: unknown directive {keyword!r} (only @template is known)")
    template = value.strip()
    if template.count("{}") != 1:
        raise LabelFileError(f"line {number}: a template needs exactly one '{{}}' for the label: {template!r}")
    return template


def _parse_label_line(line: str, number: int) -> tuple[str, tuple[str, ...] | None]:
    if "=" not in line:
        return " ".join(line.split()), None
    name, _, rest = line.partition("=")
    name = " ".join(name.split())
    prompts = tuple(p.strip() for p in rest.split("|") if p.strip())
    if not name:
        raise LabelFileError(f"line {number}: a label is missing before '='")
    if not prompts:
        raise LabelFileError(f"line {number}: label {name!r} has '=' but no prompts after it")
    return name, prompts
