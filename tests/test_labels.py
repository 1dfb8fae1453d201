import pytest

from server.labels import LabelFileError, parse_label_bytes, parse_label_text

T = ("a photo of a {}.",)


def test_labels_comments_blank_lines_and_default_template():
    parsed = parse_label_text("# header\n\ndog\n  cat   # trailing comment\nhot   dog\n", T)
    assert parsed.names == ("dog", "cat", "hot dog")
    assert parsed.labels[0].prompts == ("a photo of a dog.",)


def test_duplicates_dropped_with_warning():
    parsed = parse_label_text("dog\ncat\nDog\n", T)
    assert parsed.names == ("dog", "cat")
    assert len(parsed.warnings) == 1 and "line 3" in parsed.warnings[0]


def test_own_prompts_and_file_templates():
    text = "@template a {} here.\n@template two {} there.\nbird\ncat = a cat. | a kitten.\n"
    parsed = parse_label_text(text, T)
    assert parsed.labels[0].prompts == ("a bird here.", "two bird there.")
    assert parsed.labels[1].prompts == ("a cat.", "a kitten.")


def test_braces_in_labels_are_literal():
    assert parse_label_text("{x}\n", T).labels[0].prompts == ("a photo of a {x}.",)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "no labels"),
        ("# only comments\n\n", "no labels"),
        ("@template no placeholder\ndog\n", "exactly one"),
        ("@prompt x {}\ndog\n", "unknown directive"),
        ("= a prompt\n", "missing before"),
        ("dog =\n", "no prompts"),
    ],
)
def test_errors(text, fragment):
    with pytest.raises(LabelFileError, match=fragment):
        parse_label_text(text, T)


def test_invalid_utf8_and_bom():
    with pytest.raises(LabelFileError, match="UTF-8"):
        parse_label_bytes(b"dog\n\xff\xfe cat\n", T)
    assert parse_label_bytes("\ufeffdog\n".encode(), T).names == ("dog",)


def test_shipped_label_files_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "labels"
    for name, low in (("image.txt", 100), ("audio.txt", 100)):
        parsed = parse_label_bytes((root / name).read_bytes(), T)
        assert low <= len(parsed.names) <= 300
        assert not parsed.warnings
