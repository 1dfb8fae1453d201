import pytest

from server.events import EventThresholds
from server.labels import LabelFileError, parse_label_bytes, parse_label_files, parse_label_text

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


# --- event settings and groups --------------------------------------------------------------------


def test_file_events_merge_and_labels_lay_their_own_over_them():
    text = """@events start=3 end=1.5
dog [start=3.5 hold=4]
cat [off] = a photo of a cat. | a kitten.
siren [ min = 0.5, hold=1 ]
@events hold=2 end=1   # a later line's key wins; file-wide, so dog and cat get it too
"""
    parsed = parse_label_text(text, T)
    dog, cat, siren = parsed.labels
    assert dog.thresholds == EventThresholds(start=3.5, end=1.0, hold_seconds=4.0)
    assert cat.thresholds == EventThresholds(start=3.0, end=1.0, hold_seconds=2.0, enabled=False)
    assert cat.prompts == ("a photo of a cat.", "a kitten.")
    assert siren.thresholds == EventThresholds(start=3.0, end=1.0, min_seconds=0.5, hold_seconds=1.0)
    assert (dog.group, cat.group, siren.group) == (None, None, None)
    assert dict(parsed.group_thresholds) == {}


def test_labels_without_settings_have_none_and_off_on_toggle():
    parsed = parse_label_text("dog\ncat []\n", T)
    assert [label.thresholds for label in parsed.labels] == [None, None]
    parsed = parse_label_text("@events off\ndog\ncat [on]\n", T)
    assert [label.thresholds for label in parsed.labels] == [
        EventThresholds(enabled=False),
        EventThresholds(enabled=True),
    ]


def test_groups_in_one_file():
    text = """person
@group animals [start=4]
dog
cat
@group vehicles
car
@group animals [hold=3]   # back to animals: its settings merge
horse
"""
    parsed = parse_label_text(text, T)
    assert [(label.name, label.group) for label in parsed.labels] == [
        ("person", None),
        ("dog", "animals"),
        ("cat", "animals"),
        ("car", "vehicles"),
        ("horse", "animals"),
    ]
    assert dict(parsed.group_thresholds) == {"animals": EventThresholds(start=4.0, hold_seconds=3.0)}
    assert all(label.thresholds is None for label in parsed.labels)  # a group's settings are its own event's


def test_group_settings_lie_over_the_files_events():
    parsed = parse_label_text("@events start=3 end=1\n@group alarms [min=0.5]\nsiren\n@group quiet\nhum\n", T)
    assert parsed.group_thresholds == {
        "alarms": EventThresholds(start=3.0, end=1.0, min_seconds=0.5),
        "quiet": EventThresholds(start=3.0, end=1.0),
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("dog\ncat [strat=3]\n", "line 2: unknown event setting 'strat=3'"),
        ("dog [start=high]\n", "line 1: start needs a number, got 'high'"),
        ("dog\n\ndog2 [hold=-1]\n", "line 3: the label's settings: hold must be a number of seconds >= 0"),
        ("dog [min=-0.5]\n", "line 1: the label's settings: min must be"),
        ("dog [start=nan]\n", "line 1: the label's settings: start must be a finite number"),
        ("dog [start=1 end=2]\n", "line 1: the label's settings: end (2) must not be above start (1)"),
        ("@events start=2\ndog\ncat [end=3]\n", "line 3: 'cat' (its own settings over the file's @events): end (3)"),
        ("dog [end=3]\n@events start=2\n", "line 1: 'dog'"),  # @events is file-wide, wherever it stands
        ("@events start=1\n@events end=2\ndog\n", "line 2: the file's @events: end (2) must not be above start (1)"),
        ("@events loud\ndog\n", "line 1: unknown event setting 'loud'"),
        ("@events start=\ndog\n", "line 1: start needs a number, got ''"),
        ("dog [start=3\n", "line 1: '[' without ']'"),
        ("dog ] = a dog\n", "line 1: ']' without '['"),
        ("dog [on] extra\n", "line 1: after the [...] settings only '= prompts' may follow"),
        ("[start=3]\n", "line 1: a label is missing before '['"),
        ("dog\n@group\ncat\n", "line 2: @group needs a name"),
        ("@group a]b\ncat\n", "line 1: ']' without '['"),
        ("@group pets [off] extra\ncat\n", "line 1: nothing may follow"),
        ("@group pets [hold=-2]\ncat\n", "line 1: group 'pets': hold must be"),
        ("@events start=2\n@group pets [end=3]\ncat\n", "line 2: group 'pets' (its @group settings over"),
        ("@events\tstart=2 end=3\ndog\n", "line 1: the file's @events"),  # a tab after the keyword
    ],
)
def test_bad_settings_name_their_line(text, fragment):
    with pytest.raises(LabelFileError) as caught:
        parse_label_text(text, T)
    assert fragment in str(caught.value)


def test_request_labels_keep_brackets_literal():
    parsed = parse_label_text("dog [big]\ncat [off] = a cat.\n", T, label_options=False)
    assert parsed.names == ("dog [big]", "cat [off]")
    assert parsed.labels[1].prompts == ("a cat.",)
    assert all(label.thresholds is None for label in parsed.labels)


# --- a labels directory, Sans-I/O ------------------------------------------------------------------


def test_files_are_groups_named_after_them_with_their_own_templates_and_events():
    files = [
        ("animals.txt", b"@template a {} outside.\n@events start=4\ndog\ncat [hold=1]\n"),
        ("people.txt", b"person\n@group gestures [hold=1]\nwaving\n"),
        ("vehicles.txt", b"car\n"),
    ]
    parsed = parse_label_files(files, T)
    assert [(label.name, label.group) for label in parsed.labels] == [
        ("dog", "animals"),
        ("cat", "animals"),
        ("person", "people"),
        ("waving", "gestures"),
        ("car", "vehicles"),
    ]
    assert parsed.labels[0].prompts == ("a dog outside.",)
    assert parsed.labels[4].prompts == ("a photo of a car.",)  # the template was animals.txt's only
    assert [label.thresholds for label in parsed.labels] == [
        EventThresholds(start=4.0),
        EventThresholds(start=4.0, hold_seconds=1.0),
        None,
        None,
        None,
    ]
    assert parsed.group_thresholds == {
        "animals": EventThresholds(start=4.0),
        "gestures": EventThresholds(hold_seconds=1.0),
    }
    assert not parsed.warnings


def test_a_name_in_two_files_stays_in_the_first():
    parsed = parse_label_files([("a.txt", b"dog\ncat\n"), ("b.txt", b"bird\nCat\n")], T)
    assert parsed.names == ("dog", "cat", "bird")
    assert parsed.warnings == ("b.txt: line 2: duplicate label 'Cat' (first on a.txt line 2) dropped",)


def test_a_group_across_files_takes_the_first_files_settings():
    files = [("a.txt", b"@group pets [start=4]\ndog\n"), ("b.txt", b"@events start=5\n@group pets\ncat\n")]
    parsed = parse_label_files(files, T)
    assert [label.group for label in parsed.labels] == ["pets", "pets"]
    assert parsed.group_thresholds == {"pets": EventThresholds(start=4.0)}
    assert len(parsed.warnings) == 1 and "b.txt: group 'pets'" in parsed.warnings[0]
    assert parsed.labels[1].thresholds == EventThresholds(start=5.0)  # its own file's @events still count for cat


def test_directory_errors_name_the_file_and_line():
    with pytest.raises(LabelFileError, match=r"^b\.txt: line 2: unknown event setting"):
        parse_label_files([("a.txt", b"dog\n"), ("b.txt", b"cat\nowl [loud]\n")], T)
    with pytest.raises(LabelFileError, match=r"^b\.txt: not valid UTF-8"):
        parse_label_files([("a.txt", b"dog\n"), ("b.txt", b"\xff\n")], T)
    with pytest.raises(LabelFileError, match=r"no \*\.txt files"):
        parse_label_files([], T)
    with pytest.raises(LabelFileError, match="no labels in any"):
        parse_label_files([("a.txt", b"# nothing yet\n"), ("b.txt", b"")], T)


def test_an_empty_file_in_a_directory_is_a_warning():
    parsed = parse_label_files([("a.txt", b"dog\n"), ("new.txt", b"")], T)
    assert parsed.names == ("dog",)
    assert parsed.warnings == ("new.txt: no labels in this file",)


def test_example_directories_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "labels" / "examples"
    for folder in ("image.d", "audio.d"):
        files = sorted((root / folder).glob("*.txt"))
        parsed = parse_label_files([(file.name, file.read_bytes()) for file in files], T)
        assert len(files) >= 2 and len(parsed.names) >= 8
        assert not parsed.warnings
        assert {label.group for label in parsed.labels} >= {file.stem for file in files}


# --- a labels directory, loaded --------------------------------------------------------------------


@pytest.fixture
def image_encoder(image_model):
    from server.encoders import ModelSpec, build_encoder

    return build_encoder(ModelSpec("image", image_model))


def directory_source(folder, encoder, **limits):
    from server.labelsets import EmbeddingCache, LabelLimits, LabelSource

    return LabelSource("image", folder, encoder, EmbeddingCache(), lambda message: None, 0, LabelLimits(**limits))


def test_a_directory_loads_as_one_label_set(tmp_path, image_encoder):
    folder = tmp_path / "image.d"
    folder.mkdir()
    (folder / "vehicles.txt").write_text("@events start=4\ncar\nbus\n")
    (folder / "animals.txt").write_text("dog\ncat [off]\n")
    (folder / ".animals.txt.swp").write_text("not labels [[[\n")  # hidden: an editor's
    (folder / "notes.md").write_text("not labels [[[\n")
    (folder / "sub.txt").mkdir()  # a directory, not a label file
    source = directory_source(folder, image_encoder)
    label_set = source.load_now()
    assert label_set.names == ("dog", "cat", "car", "bus")
    assert label_set.groups == ("animals", "animals", "vehicles", "vehicles")
    assert label_set.thresholds == (
        None,
        EventThresholds(enabled=False),
        EventThresholds(start=4.0),
        EventThresholds(start=4.0),
    )
    assert label_set.group_thresholds == {"vehicles": EventThresholds(start=4.0)}
    assert label_set.matrix.shape[0] == 4
    assert (
        source.text() == "# ==> animals.txt <==\ndog\ncat [off]\n\n# ==> vehicles.txt <==\n@events start=4\ncar\nbus\n"
    )
    assert not source.editable
    with pytest.raises(LabelFileError, match="edited file by file"):
        source.write(b"dog\n")
    assert sorted(p.name for p in folder.iterdir()) == [
        ".animals.txt.swp",
        "animals.txt",
        "notes.md",
        "sub.txt",
        "vehicles.txt",
    ]


def test_directory_limits_count_all_labels_and_each_files_bytes(tmp_path, image_encoder):
    folder = tmp_path / "labels"
    folder.mkdir()
    (folder / "a.txt").write_text("one\ntwo\n")
    (folder / "b.txt").write_text("three\n")
    with pytest.raises(LabelFileError, match="3 labels is over the limit of 2"):
        directory_source(folder, image_encoder, max_labels=2).load_now()
    (folder / "b.txt").write_text("three\n" + "# padding\n" * 10)
    with pytest.raises(LabelFileError, match=r"^b\.txt: \d+ bytes is over the limit of 50"):
        directory_source(folder, image_encoder, max_file_bytes=50).load_now()
    assert directory_source(folder, image_encoder, max_labels=3, max_file_bytes=200).load_now().names == (
        "one",
        "two",
        "three",
    )


def test_an_empty_directory_is_bad(tmp_path, image_encoder):
    with pytest.raises(LabelFileError, match=r"no \*\.txt files"):
        directory_source(tmp_path, image_encoder).load_now()


def test_a_label_set_built_without_groups_or_settings_has_them_aligned():
    import numpy as np

    from server.labelsets import LabelSet

    label_set = LabelSet("image", 1, ("dog", "cat"), (("a dog",), ("a cat",)), np.eye(2), 0.0, 0)
    assert label_set.groups == (None, None)
    assert label_set.thresholds == (None, None)
    assert dict(label_set.group_thresholds) == {}
    with pytest.raises(ValueError, match="one group"):
        LabelSet("image", 1, ("dog",), (("a dog",),), np.eye(1), 0.0, 0, groups=("a", "b"))


def test_preflight_takes_a_directory(settings, tmp_path):
    from dataclasses import replace

    from server.preflight import problems

    folder = tmp_path / "image.d"
    folder.mkdir()
    assert problems(replace(settings, image_labels=folder)) == []
    missing = problems(replace(settings, image_labels=tmp_path / "nowhere.d"))
    assert len(missing) == 1 and "nowhere.d: no such file or directory" in missing[0]
