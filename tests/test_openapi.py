"""The OpenAPI schema agrees with the server: written from the declarations the handlers parse with, and
checked against a live server by schemathesis (every check, positive and negative data)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from xml.etree import ElementTree

import pytest

from server.errors import ERRORS
from server.http_params import LABEL, Param, operations
from server.openapi import openapi_schema
from server.settings import Settings

from .helpers import REPO, live_server

TOKEN = "schema-token"
HOOKS = REPO / "tests" / "schemathesis_hooks.py"


def schema_of(settings: Settings) -> dict:
    return openapi_schema(settings, operations(settings))


def parameter(schema: dict, path: str, name: str) -> dict:
    (operation,) = schema["paths"][path].values()
    return next(p for p in operation["parameters"] if p["name"] == name)


def test_ranges_follow_the_settings(settings):
    schema = schema_of(replace(settings, max_top_k=7))
    for path in ("/v1/classify/image", "/v1/classify/audio"):
        top_k = parameter(schema, path, "top_k")["schema"]
        assert (top_k["minimum"], top_k["maximum"], top_k["default"]) == (1, 7, 5)
    assert parameter(schema_of(replace(settings, max_top_k=3)), "/v1/classify/image", "top_k")["schema"]["default"] == 3
    texts = schema["paths"]["/v1/embed/text"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert texts["required"] == ["texts"] and texts["properties"]["texts"]["minItems"] == 1


def test_every_status_an_operation_may_answer_is_documented(settings):
    open_schema, closed_schema = schema_of(settings), schema_of(replace(settings, token="t"))
    assert "security" not in open_schema and closed_schema["security"] == [{"bearer": []}]
    for path, operations_ in closed_schema["paths"].items():
        for method, operation in operations_.items():
            responses = operation["responses"]
            assert {"200", "401", "500", "503"} <= set(responses), (method, path)
            assert "401" not in open_schema["paths"][path][method]["responses"]
            assert responses["503"]["headers"]["Retry-After"]["required"] is True
            for status, response in responses.items():
                if status != "200":  # each error status lists the codes it carries, all from the table
                    error = response["content"]["application/json"]["schema"]["properties"]["error"]
                    codes = error["properties"]["code"]["enum"]
                    assert codes and all(ERRORS[code].status == int(status) for code in codes), (path, status)
            if "requestBody" in operation and method == "post" and path != "/v1/embed/text":
                assert {"400", "404", "413", "415"} <= set(responses), path


@pytest.mark.parametrize("op", operations(Settings()), ids=lambda op: op.name)
def test_numeric_bounds_in_the_schema_are_the_bounds_the_server_checks(op):
    for param in (*op.params, *op.body_params):
        if param.type not in ("integer", "number"):
            continue
        assert param.minimum is not None and param.maximum is not None, param.name
        param.from_strings([str(param.minimum)])
        param.from_strings([str(param.maximum)])
        step = 1 if param.type == "integer" else 1e-6
        for outside in (param.minimum - step, param.maximum + step):
            with pytest.raises(Exception, match=f"'{param.name}' must be between"):
                param.from_strings([str(outside)])


@pytest.mark.parametrize(
    ("label", "ok"),
    [
        ("cat", True),
        ("  red  kite ", True),
        ("cat = a photo of a cat. | a kitten.", True),
        ("a=b=c", True),
        ("[not json", False),
        ("{x}", False),
        ("@template a {}", False),
        ("cat # comment", False),
        ("two\nlabels", False),
        ("no prompts =", False),
        ("= no name", False),
        ("only bars = | |", False),
        ("\u00a0\u3000", False),
        ("", False),
    ],
)
def test_the_label_pattern_is_what_the_label_parser_takes(label, ok):
    from server.labels import DEFAULT_TEMPLATES, parse_label_text

    param = Param("labels", "array", "", pattern=LABEL, rule="a label line")
    try:
        param.from_strings([label])
        accepted = True
    except Exception:
        accepted = False
    assert accepted == ok
    if ok:  # what the pattern lets through, the label file parser takes, as exactly one label
        assert len(parse_label_text(label, DEFAULT_TEMPLATES["image"]).labels) == 1


def test_schemathesis_finds_no_disagreement(settings, tmp_path):
    """schemathesis, every check, against a live server with a token: schema-valid requests are accepted,
    schema-violating ones refused, every answer's status, type, headers and body are as documented.

    Its hooks (tests/schemathesis_hooks.py) only say what a valid file of each media type is; nothing is
    excluded. A fixed seed keeps the run reproducible (seeds 1 to 15 pass); 30 examples per operation keep
    it near 20 s on two cores.
    """
    pytest.importorskip("schemathesis")
    with live_server(replace(settings, token=TOKEN)) as server:
        done = subprocess.run(
            [
                sys.executable, "-m", "schemathesis.cli", "run", f"{server.http}/openapi.json",
                "--checks", "all",
                "--header", f"Authorization: Bearer {TOKEN}",
                "--max-examples", "30",
                "--seed", "1",
                "--generation-database", "none",
                "--request-timeout", "30",
                "--no-color",
                "--report", "junit", "--report-dir", str(tmp_path),
            ],
            env={**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
    output = (done.stdout + done.stderr)[-8000:]
    (report,) = tmp_path.glob("*.xml")
    suite = ElementTree.parse(report).getroot()
    assert done.returncode == 0, output
    tested = {case.get("name") for case in suite.iter("testcase")}
    assert tested == {f"{op.method} {op.path}" for op in operations(settings)}, output  # every operation
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), output
