"""`reconciler schema gateway|profile`: one JSON Schema document each, which a real validator
(what editors' TOML tooling runs) accepts the shipped examples with and rejects a typo by."""

from __future__ import annotations

import json
import tomllib

import jsonschema
import pytest

from reconciler import cli
from tests.helpers import REPO

Capsys = pytest.CaptureFixture[str]


def _schema(which: str, capsys: Capsys) -> dict[str, object]:
    assert cli.main(["schema", which]) == 0
    document = json.loads(capsys.readouterr().out)
    assert isinstance(document, dict)
    jsonschema.Draft7Validator.check_schema(document)
    return document


@pytest.mark.parametrize(
    ("which", "files"),
    [
        ("gateway", ["desired-state/gateway.toml"]),
        (
            "profile",
            sorted(
                p.relative_to(REPO).as_posix()
                for p in (REPO / "desired-state/profiles").glob("*.toml")
            ),
        ),
    ],
)
def test_the_examples_validate_against_their_schema(
    which: str, files: list[str], capsys: Capsys
) -> None:
    schema = _schema(which, capsys)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    validator = jsonschema.Draft7Validator(schema)
    for name in files:
        document = tomllib.loads((REPO / name).read_text())
        assert not list(validator.iter_errors(document)), name


def test_a_typo_and_a_wrong_value_fail_the_schema(capsys: Capsys) -> None:
    validator = jsonschema.Draft7Validator(_schema("gateway", capsys))
    typo = tomllib.loads('[console]\nhttps = true\ntls_polcy = "modern"\n')
    assert any("tls_polcy" in e.message for e in validator.iter_errors(typo))
    wrong = tomllib.loads('[smtp_inbound]\ntls = "sometimes"\n')
    assert any("'sometimes' is not one of" in e.message for e in validator.iter_errors(wrong))
    profile = jsonschema.Draft7Validator(_schema("profile", capsys))
    assert list(profile.iter_errors({"url": "smtps://x.example", "mode": "random"}))


def test_schema_without_a_file_prints_both_keyed_by_file(capsys: Capsys) -> None:
    assert cli.main(["schema"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert set(both) == {"gateway.toml", "profiles/NAME.toml"}
