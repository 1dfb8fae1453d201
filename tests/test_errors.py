"""One table of errors: server/errors.py and docs/protocol.md must say the same."""

import re

from server.errors import CLOSE_CODES, ERRORS, ErrorCode, InputError, http_status

from .helpers import REPO

DOC = (REPO / "docs" / "protocol.md").read_text()


def test_the_documented_error_table_is_the_module_table():
    rows = re.findall(r"^\| `(\w+)` \| (\d{3}) \| (.+) \|$", DOC, re.MULTILINE)
    assert {code: (int(status), when) for code, status, when in rows} == {
        code: (kind.status, kind.when) for code, kind in ERRORS.items()
    }


def test_the_documented_close_codes_are_the_module_close_codes():
    rows = re.findall(r"^\| (\d{4}) \| (.+) \|$", DOC, re.MULTILINE)
    assert {int(code): meaning for code, meaning in rows} == CLOSE_CODES


def test_every_code_constant_is_in_the_table_and_statuses_follow_it():
    constants = {value for name, value in vars(ErrorCode).items() if name.isupper()}
    assert constants == set(ERRORS)
    assert InputError(ErrorCode.TOO_LARGE, "x").status == 413 == http_status("too_large")
    assert http_status(ErrorCode.BUSY) == 503
