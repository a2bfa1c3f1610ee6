"""The JSON Schema documents shipped in probe/schemas/: valid themselves, in step with the
code's closed sets, printed by `smtp-probe schema`, and one interpretation shape everywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator

from probe.checks import Severity
from probe.cli import cli
from probe.model import ACTORS, CATEGORIES
from probe.result import DnsStatus, ErrorKind, Outcome, Verdict
from tests.conftest import SCHEMAS, valid
from tests.rawsmtp import Server, serving

NAMES = sorted(p.stem for p in SCHEMAS.glob("*.json"))


def load(name: str) -> Any:
    return json.loads((SCHEMAS / f"{name}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", NAMES)
def test_each_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].startswith(f"urn:smtp-probe:schema:{name}:")


def test_every_output_has_a_schema() -> None:
    wanted = {"probe", "batch", "batch-error", "mx", "explain", "explain-summary", "compare"}
    assert wanted | {"codes"} == set(NAMES)


def test_closed_sets_match_the_code() -> None:
    probe = load("probe")
    defs = probe["$defs"]
    assert defs["session"]["properties"]["outcome"]["enum"] == [o.value for o in Outcome]
    kinds = defs["step"]["properties"]["error"]["oneOf"][1]["properties"]["kind"]["enum"]
    assert kinds == [k.value for k in ErrorKind]
    assert probe["properties"]["verdict"]["enum"] == [v.value for v in Verdict]
    dns = probe["properties"]["dns"]["oneOf"][1]["properties"]["status"]["enum"]
    assert dns == [s.value for s in DnsStatus]
    interp = defs["reply_interpreted"]["properties"]
    assert interp["category"]["enum"] == list(CATEGORIES)
    assert interp["retry"]["properties"]["actor"]["enum"] == list(ACTORS)
    severity = load("mx")["properties"]["findings"]["items"]["properties"]["severity"]["enum"]
    assert sorted(severity) == sorted(s.label for s in Severity)


def test_one_interpretation_shape_in_every_schema() -> None:
    """probe replies, batch records, explain items and compare items share their fields."""
    reply = load("probe")["$defs"]["reply_interpreted"]["properties"]
    item = load("explain")["$defs"]["found"]["properties"]
    shared = {k: v for k, v in reply.items() if k not in ("code", "enhanced", "lines")}
    assert shared == {k: item[k] for k in shared}
    assert load("batch")["$defs"] == load("probe")["$defs"]
    assert load("compare")["$defs"] == load("explain")["$defs"]


@pytest.mark.parametrize("name", NAMES)
def test_schema_command_prints_each(name: str) -> None:
    r = CliRunner().invoke(cli, ["schema", name])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == load(name)


def test_schema_command_lists_names_and_refuses_others() -> None:
    listed = CliRunner().invoke(cli, ["schema"])
    assert listed.exit_code == 0 and listed.stdout.split() == NAMES
    r = CliRunner().invoke(cli, ["schema", "nope"])
    assert r.exit_code == 64
    assert r.stderr.count("\n") == 1 and "no schema 'nope'" in r.stderr and "--help" in r.stderr


def test_rule_is_the_same_object_in_explain_and_probe() -> None:
    """`rule` used to be a string in probe's JSON and an object in explain's."""
    reply = "550 5.1.1 <bob@example.org>: Recipient address rejected: User unknown"
    item = valid(
        json.loads(CliRunner().invoke(cli, ["explain", "--format", "json", reply]).stdout),
        "explain",
    )[0]
    server = Server(rcpt=reply)
    with serving(server) as port:
        r = CliRunner().invoke(
            cli, ["bob@[127.0.0.1]", "--port", str(port), "--timeout", "2", "--format", "json"]
        )
    doc = valid(json.loads(r.stdout))
    rcpt = next(s for s in doc["sessions"][0]["steps"] if s["command"] == "RCPT")["reply"]
    assert rcpt["rule"] == item["rule"] and isinstance(rcpt["rule"], dict)
    shared = set(item) - {"input", "found", "form", "command", "text"}
    assert {k: rcpt[k] for k in shared} == {k: item[k] for k in shared}


def test_probe_json_carries_the_flags_its_text_shows() -> None:
    """A 550 with a 4.x.x enhanced code: the transcript warns, and the JSON says the same in
    ids, parameters and English text, whatever the output language."""
    server = Server(rcpt="550 4.4.7 Message expired")
    with serving(server) as port:
        args = ["bob@[127.0.0.1]", "--port", str(port), "--timeout", "2", "--lang", "de"]
        text = CliRunner().invoke(cli, args, env={"NO_COLOR": "1"}).stdout
        doc = valid(json.loads(CliRunner().invoke(cli, [*args, "--format", "json"]).stdout))
    rcpt = next(s for s in doc["sessions"][0]["steps"] if s["command"] == "RCPT")["reply"]
    flag = next(f for f in rcpt["flags"] if f["id"] == "class_mismatch")
    assert flag["params"] == {"enhanced_class": "4", "basic_class": "5"}
    assert flag["message"].startswith("The enhanced code's class (4) differs")
    assert "    ! " in text and "(4)" in text.split("    ! ", 1)[1]
