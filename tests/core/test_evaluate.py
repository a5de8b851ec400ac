"""The pure core's loader: bytes of a hand-built StateInput in, every finding collected out."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from collections.abc import Mapping
from functools import cache

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.desired import (
    ConsoleSection,
    Finding,
    GatewayFile,
    IdentitySection,
    PolicySection,
    ProfileFile,
    json_schema,
)
from reconciler.core.evaluate import Evaluation, KeySource, SourceFile, StateInput, evaluate
from reconciler.core.schema import check_table, parse_toml
from reconciler.core.secret import SecretBytes
from reconciler.support import devpki

NOW = dt.datetime.now(dt.UTC)
GATEWAY = "gateway.toml"

_FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


@cache
def _identity_pem() -> tuple[bytes, bytes, bytes]:
    """(chain, key, a CA) generated once per module: hypothesis must not make keys per example."""
    root = devpki.make_ca("Load Test Root")
    intermediate = devpki.make_ca("Load Test Intermediate", issuer=root)
    leaf = devpki.issue(intermediate, "gateway.test")
    return leaf.cert_pem + intermediate.cert_pem, leaf.key_pem, root.cert_pem


IDENTITY = '[identity]\ncert = "tls/cert.pem"\nkey = "tls/key.pem"\n'


def _state(
    gateway: bytes | str | None,
    *,
    identity: bool = True,
    trust: Mapping[str, bytes] | None = None,
    profiles: Mapping[str, bytes | str] | None = None,
    findings: tuple[Finding, ...] = (),
) -> StateInput:
    chain, key, _ = _identity_pem()
    data = gateway.encode() if isinstance(gateway, str) else gateway
    return StateInput(
        revision="sha256:" + "0" * 64,
        gateway=SourceFile(GATEWAY, data) if gateway is not None else None,
        cert=SourceFile("tls/cert.pem", chain) if identity else None,
        key=KeySource("tls/key.pem", SecretBytes(key)) if identity else None,
        trust=tuple((n, SourceFile(f"trust/{n}.pem", d)) for n, d in sorted((trust or {}).items())),
        profiles=tuple(
            (n, SourceFile(f"profiles/{n}.toml", d.encode() if isinstance(d, str) else d))
            for n, d in sorted((profiles or {}).items())
        ),
        findings=findings,
    )


def _errors(evaluation: Evaluation) -> list[tuple[str, str | None, str]]:
    return [(f.file, f.field, f.reason) for f in evaluation.errors]


def _consistent(evaluation: Evaluation) -> None:
    """The loader's contract: a desired state exactly when there is no error, and every finding
    says where and why."""
    assert (evaluation.desired is None) == bool(evaluation.errors), evaluation.findings
    for finding in evaluation.findings:
        assert isinstance(finding, Finding)
        assert finding.file
        assert finding.reason
    if evaluation.desired is not None and evaluation.desired.gateway.identity is not None:
        assert evaluation.desired.identity is not None


# -- a valid state -------------------------------------------------------------------------------


def test_valid_state_gives_a_desired_state() -> None:
    _, _, ca = _identity_pem()
    evaluation = evaluate(
        _state(
            IDENTITY + '[console]\nhttps = true\n[smtp_inbound]\ntls = "required"\n',
            trust={"ca": ca},
            profiles={"relay": 'url = "smtps://relay.example.com"\n'},
        ),
        NOW,
    )
    assert evaluation.errors == ()
    desired = evaluation.desired
    assert desired is not None
    assert desired.identity is not None
    assert desired.identity.leaf.subject == "CN=gateway.test"
    assert [t.name for t in desired.trust] == ["ca"]
    assert [(p.name, p.port, p.tls) for p in desired.profiles] == [("relay", 465, "implicit")]


def test_empty_gateway_is_all_defaults() -> None:
    evaluation = evaluate(_state("", identity=False), NOW)
    assert evaluation.findings == ()
    assert evaluation.desired is not None
    gateway = evaluation.desired.gateway
    assert gateway == GatewayFile()
    assert gateway.console.https is False
    assert gateway.smtp_inbound.tls == "off"
    assert gateway.policy.min_days_valid == 7


def test_missing_gateway_is_an_error() -> None:
    evaluation = evaluate(_state(None, identity=False), NOW)
    assert _errors(evaluation) == [(GATEWAY, None, "required file is missing")]
    assert evaluation.desired is None


def test_snapshot_findings_are_kept_and_reject() -> None:
    found = Finding("error", "trust/x.pem", None, "path leads outside the desired-state directory")
    evaluation = evaluate(_state("", identity=False, findings=(found,)), NOW)
    assert found in evaluation.errors
    assert evaluation.desired is None


def test_snapshot_warnings_alone_do_not_reject() -> None:
    found = Finding("warning", "trust/README.md", None, "ignored: not NAME.pem or NAME.crt")
    evaluation = evaluate(_state("", identity=False, findings=(found,)), NOW)
    assert evaluation.desired is not None
    assert found in evaluation.desired.warnings


# -- gateway.toml errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["[console\n", "https = = true\n", "[console]\nhttps = true\nhttps = false\n", 'a = "\n'],
    ids=["unclosed-table", "double-equals", "duplicate-key", "unclosed-string"],
)
def test_toml_syntax_error_names_the_file(text: str) -> None:
    evaluation = evaluate(_state(text, identity=False), NOW)
    errors = _errors(evaluation)
    assert len(errors) == 1
    file, field, reason = errors[0]
    assert (file, field) == (GATEWAY, None)
    assert "TOML syntax error" in reason
    assert "line" in reason  # tomllib says where, which the operator needs
    assert evaluation.desired is None


def test_not_utf8_names_the_byte() -> None:
    evaluation = evaluate(_state(b"[console]\n# \xff\n", identity=False), NOW)
    assert _errors(evaluation) == [(GATEWAY, None, "not UTF-8 text (byte 12)")]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (IDENTITY + 'extra = "x"\n', "identity.extra"),
        (IDENTITY + "[policy]\nmin_day_valid = 7\n", "policy.min_day_valid"),
        (IDENTITY + "[policy]\nallow_selfsigned = true\n", "policy.allow_selfsigned"),
        (IDENTITY + "[console]\nhttp2 = true\n", "console.http2"),
        (IDENTITY + "[smtp_inbound]\nstarttls = true\n", "smtp_inbound.starttls"),
        (IDENTITY + "[logging]\nlevel = 1\n", "logging"),
        ("version = 2\n" + IDENTITY, "version"),
        (IDENTITY + "[hooks]\nrun = ['sh']\n", "hooks"),
    ],
    ids=[
        "identity-extra",
        "policy-typo",
        "policy-typo-2",
        "console-extra",
        "smtp-extra",
        "unknown-table",
        "unknown-top-level-key",
        "hooks-are-not-desired-state",
    ],
)
def test_unknown_key_is_an_error_naming_it(text: str, field: str) -> None:
    evaluation = evaluate(_state(text), NOW)
    assert _errors(evaluation) == [(GATEWAY, field, "unknown key (typo?)")]
    assert evaluation.desired is None


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[console]\nhttps = "true"\n', "console.https"),
        ("[console]\nhttps = 1\n", "console.https"),
        ("[policy]\nmin_days_valid = 7.0\n", "policy.min_days_valid"),
        ('[policy]\nmin_days_valid = "7"\n', "policy.min_days_valid"),
        ("[policy]\nallow_self_signed = 0\n", "policy.allow_self_signed"),
        ("[policy]\nrequire_tls_outbound = 'yes'\n", "policy.require_tls_outbound"),
        ("[console]\ntls_policy = 1\n", "console.tls_policy"),
        ("[smtp_inbound]\ntls = true\n", "smtp_inbound.tls"),
        ('identity = "tls/cert.pem"\n', "identity"),
        ('console = "on"\n', "console"),
        ("[identity]\ncert = 1\nkey = 'tls/key.pem'\n", "identity.cert"),
    ],
    ids=[
        "bool-as-string",
        "bool-as-int",
        "int-as-float",
        "int-as-string",
        "bool-as-zero",
        "bool-as-yes",
        "literal-as-int",
        "literal-as-bool",
        "table-as-string",
        "console-as-string",
        "path-as-int",
    ],
)
def test_wrong_type_is_an_error_naming_the_field(text: str, field: str) -> None:
    evaluation = evaluate(_state(text, identity=False), NOW)
    errors = _errors(evaluation)
    assert [(f, fl) for f, fl, _ in errors] == [(GATEWAY, field)], errors
    assert evaluation.desired is None


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('[console]\ntls_policy = "strict"\n', "console.tls_policy", "'strict'"),
        ('[smtp_inbound]\ntls = "on"\n', "smtp_inbound.tls", "'on'"),
        ("[policy]\nmin_days_valid = -1\n", "policy.min_days_valid", "-1"),
        ("[policy]\nmin_days_valid = 3651\n", "policy.min_days_valid", "3651"),
    ],
    ids=["bad-policy", "bad-inbound-tls", "min-days-negative", "min-days-too-large"],
)
def test_bad_value_is_an_error_naming_field_and_value(text: str, field: str, words: str) -> None:
    evaluation = evaluate(_state(text, identity=False), NOW)
    errors = _errors(evaluation)
    assert len(errors) == 1, errors
    assert errors[0][:2] == (GATEWAY, field)
    assert words in errors[0][2]


@pytest.mark.parametrize("days", [0, 3650])
def test_min_days_valid_bounds_are_accepted(days: int) -> None:
    evaluation = evaluate(_state(f"[policy]\nmin_days_valid = {days}\n", identity=False), NOW)
    assert evaluation.errors == ()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('[identity]\ncert = "tls/cert.pem"\n', "identity.key"),
        ('[identity]\nkey = "tls/key.pem"\n', "identity.cert"),
        ('[identity]\ncert = ""\nkey = "tls/key.pem"\n', "identity.cert"),
    ],
    ids=["missing-key", "missing-cert", "empty-cert"],
)
def test_incomplete_identity_is_an_error(text: str, field: str) -> None:
    evaluation = evaluate(_state(text, identity=False), NOW)
    fields = [fl for _, fl, _ in _errors(evaluation)]
    assert fields == [field]
    assert evaluation.desired is None


def test_missing_identity_key_says_it_is_required() -> None:
    evaluation = evaluate(_state('[identity]\ncert = "tls/cert.pem"\n', identity=False), NOW)
    assert _errors(evaluation) == [(GATEWAY, "identity.key", "required key is missing")]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[console]\nhttps = true\n", "console.https"),
        ('[smtp_inbound]\ntls = "optional"\n', "smtp_inbound.tls"),
    ],
)
def test_tls_without_identity_is_an_error(text: str, field: str) -> None:
    evaluation = evaluate(_state(text, identity=False), NOW)
    assert [(f, fl) for f, fl, _ in _errors(evaluation)] == [(GATEWAY, field)]


def test_identity_asked_for_but_not_read_is_never_silently_dropped() -> None:
    evaluation = evaluate(_state(IDENTITY + "[console]\nhttps = true\n", identity=False), NOW)
    _consistent(evaluation)
    assert evaluation.desired is None


# -- profile files -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ('url = "smtps://a.example.com"\ntimeout = 3\n', "timeout", "unknown"),
        ("url = 1\n", "url", ""),
        ("", "url", "required"),
        (
            'url = "smtp://a.example.com"\ntransport_encryption = "tls"\n',
            "transport_encryption",
            "",
        ),
        ('url = "smtps://a.example.com"\n[extra]\n', "extra", "unknown"),
    ],
    ids=["unknown-key", "url-not-string", "url-missing", "bad-encryption", "unknown-table"],
)
def test_profile_model_errors_name_file_and_field(text: str, field: str, words: str) -> None:
    evaluation = evaluate(_state("", identity=False, profiles={"p": text}), NOW)
    errors = _errors(evaluation)
    assert len(errors) == 1, errors
    assert errors[0][:2] == ("profiles/p.toml", field)
    assert words in errors[0][2]


def test_profile_toml_syntax_error() -> None:
    evaluation = evaluate(_state("", identity=False, profiles={"p": 'url = "x'}), NOW)
    assert [(f, fl) for f, fl, _ in _errors(evaluation)] == [("profiles/p.toml", None)]
    assert "TOML syntax error" in evaluation.errors[0].reason


# -- collecting everything -----------------------------------------------------------------------


def test_errors_of_every_file_are_collected_in_one_evaluation() -> None:
    chain, key, ca = _identity_pem()
    state = StateInput(
        revision="sha256:" + "1" * 64,
        gateway=SourceFile(GATEWAY, (IDENTITY + "[policy]\nmin_day_valid = 3\n").encode()),
        cert=SourceFile("tls/cert.pem", chain),
        key=KeySource("tls/key.pem", SecretBytes(key)),
        trust=(
            ("bad", SourceFile("trust/bad.pem", b"nope")),
            ("good", SourceFile("trust/good.pem", ca)),
        ),
        profiles=(
            ("ftp", SourceFile("profiles/ftp.toml", b'url = "ftp://x.example.com"\n')),
            ("syntax", SourceFile("profiles/syntax.toml", b"url = \n")),
            ("typo", SourceFile("profiles/typo.toml", b'url = "smtps://a.b"\nport = 1\n')),
        ),
        findings=(Finding("error", "trust/x.pem", None, "over the 1 MiB limit"),),
    )
    evaluation = evaluate(state, NOW)
    files = {f.file for f in evaluation.errors}
    assert files == {
        GATEWAY,
        "trust/x.pem",
        "trust/bad.pem",
        "profiles/ftp.toml",
        "profiles/syntax.toml",
        "profiles/typo.toml",
    }, evaluation.errors
    assert evaluation.desired is None
    # Errors first, then sorted by file: a stable report.
    severities = [f.severity for f in evaluation.findings]
    assert severities == sorted(severities, key=lambda s: s != "error")


def test_identity_errors_are_collected_with_profile_errors() -> None:
    chain, _, _ = _identity_pem()
    state = StateInput(
        revision="r",
        gateway=SourceFile(GATEWAY, IDENTITY.encode()),
        cert=SourceFile("tls/cert.pem", chain),
        key=KeySource("tls/key.pem", SecretBytes(b"not a key")),
        profiles=(("p", SourceFile("profiles/p.toml", b"url = 1\n")),),
    )
    files = {f.file for f in evaluate(state, NOW).errors}
    assert files == {"tls/key.pem", "profiles/p.toml"}


def test_identity_errors_are_collected_with_gateway_errors() -> None:
    """A policy typo does not hide a broken key: both are reported at once."""
    chain, _, _ = _identity_pem()
    state = StateInput(
        revision="r",
        gateway=SourceFile(GATEWAY, (IDENTITY + "[console]\nhttp2 = true\n").encode()),
        cert=SourceFile("tls/cert.pem", chain),
        key=KeySource("tls/key.pem", SecretBytes(b"not a key")),
    )
    files = {f.file for f in evaluate(state, NOW).errors}
    assert files == {GATEWAY, "tls/key.pem"}


def test_parse_toml_returns_model_or_findings() -> None:
    model, findings = parse_toml(b'url = "https://a.example.com"\n', "p.toml", ProfileFile)
    assert findings == []
    assert model == ProfileFile(url="https://a.example.com")
    model, findings = parse_toml(b"url = 1\nx = 2\n", "p.toml", ProfileFile)
    assert model is None
    assert {f.field for f in findings} == {"url", "x"}


@pytest.mark.parametrize(
    "data",
    [b"url = 1\nx = 2\n", b"url = \n", b"\xff", b'url = "https://a.example.com"\n'],
    ids=["model-errors", "toml-syntax", "not-utf8", "valid"],
)
def test_parse_toml_again_gives_the_same_answer_in_a_new_list(data: bytes) -> None:
    """Every pass parses every profile again (cached by content): callers own their findings."""
    first_model, first = parse_toml(data, "profiles/a.toml", ProfileFile)
    snapshot = list(first)
    first.append(Finding("error", "elsewhere", None, "added by a caller"))
    again_model, again = parse_toml(data, "profiles/a.toml", ProfileFile)
    assert again == snapshot
    assert again is not first
    assert again_model == first_model


def test_parse_toml_names_the_file_asked_about_whatever_was_parsed_before() -> None:
    """Two profiles with the same bytes: each finding names its own file."""
    data = b'url = "https://a.example.com"\ntypo = 1\n'
    for file in ("profiles/a.toml", "profiles/b.toml", "profiles/a.toml"):
        model, findings = parse_toml(data, file, ProfileFile)
        assert model is None
        assert [(f.file, f.field) for f in findings] == [(file, "typo")]


def test_parse_toml_of_a_large_file_is_still_checked() -> None:
    """Files beyond what the parse cache keeps take the same path to the same answer."""
    padding = b"# " + b"x" * 8000 + b"\n"
    model, findings = parse_toml(
        padding + b'url = "https://a.example.com"\n', "p.toml", ProfileFile
    )
    assert findings == []
    assert model == ProfileFile(url="https://a.example.com")
    model, findings = parse_toml(padding + b"url = 1\n", "p.toml", ProfileFile)
    assert model is None
    assert [f.field for f in findings] == ["url"]


def test_every_toml_section_is_frozen_so_parses_can_share_it() -> None:
    """parse_toml shares one model between calls on the same bytes: none may be changed."""
    for model in (GatewayFile, ProfileFile, PolicySection, ConsoleSection):
        assert model.__dataclass_params__.frozen  # type: ignore[attr-defined]
    parsed, _ = parse_toml(b'url = "a"\n', "m.toml", ProfileFile)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.url = "changed"  # type: ignore[misc, union-attr]


# -- any bytes, any TOML: findings, never an exception --------------------------------------------


@_FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_as_gateway_give_findings_or_a_state(data: bytes) -> None:
    _consistent(evaluate(_state(data), NOW))


@_FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_as_profile_give_findings_or_a_state(data: bytes) -> None:
    _consistent(evaluate(_state("", identity=False, profiles={"p": data}), NOW))


# A tiny TOML writer, so hypothesis can build documents that parse and stress the models.

Scalar = bool | int | float | str
Value = Scalar | list["Value"] | dict[str, "Value"]


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\' or ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_string(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def to_toml(document: Mapping[str, Value]) -> str:
    """Top-level scalars first, then one [table] per top-level dict; deeper dicts inline."""
    lines = [
        f"{_toml_string(k)} = {_toml_value(v)}"
        for k, v in document.items()
        if not isinstance(v, dict)
    ]
    for key, table in document.items():
        if isinstance(table, dict):
            lines.append(f"[{_toml_string(key)}]")
            lines += [f"{_toml_string(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], max_codepoint=0x2FF), max_size=12)
_KEYS = st.one_of(
    st.sampled_from(
        [
            "identity",
            "cert",
            "key",
            "console",
            "https",
            "tls_policy",
            "smtp_inbound",
            "tls",
            "policy",
            "allow_self_signed",
            "min_days_valid",
            "require_tls_outbound",
            "url",
            "transport_encryption",
        ]
    ),
    _TEXT,
)
_SCALARS: st.SearchStrategy[Scalar] = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.sampled_from(
        [
            "tls/cert.pem",
            "tls/key.pem",
            "modern",
            "intermediate",
            "old",
            "off",
            "optional",
            "required",
            "none",
            "starttls-optional",
            "starttls-required",
            "smtp://relay.example.com",
            "smtps://relay.example.com:465",
            "https://core.example.com/api",
            "http://[::1]:8080/x",
            "/etc/passwd",
            "../x",
        ]
    ),
    _TEXT,
)
_VALUES: st.SearchStrategy[Value] = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=8,
)
_DOCUMENTS = st.dictionaries(_KEYS, _VALUES, max_size=5)


def test_toml_writer_round_trips() -> None:
    import tomllib

    document: dict[str, Value] = {
        "a": 'q"\\\n\x7f',
        "t": {"n": -1, "f": 1.5e300, "l": [True, {"x": "y"}]},
        "z": float("inf"),
    }
    assert tomllib.loads(to_toml(document)) == document


@_FUZZ
@given(_DOCUMENTS)
def test_any_toml_document_as_gateway_gives_findings_or_a_state(document: dict[str, Value]) -> None:
    import tomllib

    text = to_toml(document)
    tomllib.loads(text)  # the writer produced TOML, so the model checks are what is exercised
    _consistent(evaluate(_state(text), NOW))


@_FUZZ
@given(_DOCUMENTS)
def test_any_toml_document_as_profile_gives_findings_or_a_state(document: dict[str, Value]) -> None:
    _consistent(evaluate(_state("", identity=False, profiles={"p": to_toml(document)}), NOW))


# -- the TOML rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"console": {"https": 1}},
            [("console.https", "must be a boolean (true or false), got 1")],
        ),
        ({"policy": {"min_days_valid": True}}, [("policy.min_days_valid", "must be an integer")]),
        ({"policy": {"min_days_valid": 7.0}}, [("policy.min_days_valid", "must be an integer")]),
        ({"policy": {"min_days_valid": 3651}}, [("policy.min_days_valid", "from 0 to 3650")]),
        ({"policy": {"min_days_valid": -1}}, [("policy.min_days_valid", "from 0 to 3650")]),
        (
            {"console": {"tls_policy": "strong"}},
            [("console.tls_policy", "must be 'modern', 'intermediate' or 'old', got 'strong'")],
        ),
        ({"identity": {"cert": "", "key": "k"}}, [("identity.cert", "must not be empty")]),
        ({"identity": {"cert": "c"}}, [("identity.key", "required key is missing")]),
        ({"identity": "tls/cert.pem"}, [("identity", "must be a table ([identity])")]),
        ({"policy": {"min_day_valid": 3}}, [("policy.min_day_valid", "unknown key (typo?)")]),
        ({"consol": {}}, [("consol", "unknown key (typo?)")]),
        (
            {"console": {"https": "yes", "tls_policy": 1}, "x": 1},
            [
                ("console.https", "must be a boolean"),
                ("console.tls_policy", "must be a string"),
                ("x", "unknown key"),
            ],
        ),
    ],
    ids=[
        "int-for-bool",
        "bool-for-int",
        "float-for-int",
        "over-range",
        "under-range",
        "not-a-choice",
        "empty-string",
        "missing",
        "not-a-table",
        "unknown-key",
        "unknown-table",
        "all-at-once",
    ],
)
def test_toml_rules_are_strict_and_report_every_key(
    raw: dict[str, object], expected: list[tuple[str, str]]
) -> None:
    model, problems = check_table(raw, GatewayFile)
    assert model is None
    assert [where for where, _ in problems] == [where for where, _ in expected]
    for (_, reason), (_, words) in zip(problems, expected, strict=True):
        assert words in reason


def test_toml_rules_give_the_model_with_its_defaults() -> None:
    model, problems = check_table(
        {"identity": {"cert": "c.pem", "key": "k.pem"}, "policy": {"min_days_valid": 0}},
        GatewayFile,
    )
    assert problems == []
    assert model == GatewayFile(
        identity=IdentitySection(cert="c.pem", key="k.pem"),
        policy=PolicySection(min_days_valid=0),
    )
    assert model.console == ConsoleSection(https=False, tls_policy="intermediate")


def test_schema_follows_the_rules() -> None:
    schema = json_schema(GatewayFile)
    policy = schema["properties"]["policy"]  # type: ignore[index]
    assert policy["properties"]["min_days_valid"] == {
        "type": "integer",
        "default": 7,
        "minimum": 0,
        "maximum": 3650,
    }
    assert schema["additionalProperties"] is False
    profile = json_schema(ProfileFile)
    assert profile["oneOf"] == [{"required": ["url"]}, {"required": ["servers"]}]
    assert profile["properties"]["servers"]["items"]["type"] == "string"  # type: ignore[index]


def test_a_huge_wrong_value_is_quoted_short() -> None:
    _, problems = check_table({"console": {"tls_policy": "x" * 100_000}}, GatewayFile)
    [(where, reason)] = problems
    assert where == "console.tls_policy"
    assert reason.startswith("must be 'modern', 'intermediate' or 'old', got 'xxx")
    assert reason.endswith("...")
    assert len(reason) < 200


def test_a_profile_evaluated_again_follows_its_bytes_and_the_policy() -> None:
    """Evaluations in a row (a daemon's passes) reuse what an unchanged profile said, but never
    across a change of its bytes or of the policy it was judged under."""
    clear = 'url = "smtp://relay.example.com"\ntransport_encryption = "none"\n'
    tls = 'url = "smtps://relay.example.com"\n'

    def verdict(policy: str, profile: str) -> list[tuple[str, str]]:
        gateway = f"[policy]\nrequire_tls_outbound = {policy}\n"
        evaluation = evaluate(_state(gateway, identity=False, profiles={"relay": profile}), NOW)
        _consistent(evaluation)
        return [(f.severity, f.field or "") for f in evaluation.findings]

    lenient = [("warning", "transport_encryption")]
    strict = [("error", "transport_encryption")]
    assert verdict("false", clear) == lenient
    assert verdict("true", clear) == strict
    assert verdict("false", clear) == lenient
    assert verdict("true", tls) == []
    assert verdict("true", clear) == strict
