"""Targets and options as admins type them: address literals with ports, IDN and SMTPUTF8,
malformed addresses, usage errors, unwritable output, --redact, batch --expect, and what
--starttls require, -4 and -6 report. Loopback servers and the lab DNS only."""

from __future__ import annotations

import ipaddress
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

from probe.cli import COMMANDS, cli
from probe.lab.dns import LoopThread, ZoneDNS
from probe.redact import Redactor
from probe.target import TargetError, is_ip, parse_literal, parse_target
from tests.conftest import valid, valid_lines
from tests.rawsmtp import Server, serving


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        cli, list(args), input=input, env={"NO_COLOR": "1"}, prog_name="smtp-probe"
    )


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("text", "host", "port", "rcpt"),
    [
        ("[192.0.2.1]", "192.0.2.1", None, ()),
        ("[192.0.2.1]:2525", "192.0.2.1", 2525, ()),
        ("192.0.2.1:2525", "192.0.2.1", 2525, ()),
        ("[::1]", "::1", None, ()),
        ("[::1]:2525", "::1", 2525, ()),
        ("[IPv6:::1]", "::1", None, ()),
        ("[IPv6:2001:db8::1]:587", "2001:db8::1", 587, ()),
        ("user@[192.0.2.1]", "192.0.2.1", None, ("user@[192.0.2.1]",)),
        ("user@[::1]", "::1", None, ("user@[IPv6:::1]",)),  # sent in RFC 5321's form
        ("mx.example.org:587", "mx.example.org", 587, ()),
    ],
)
def test_target_forms(text: str, host: str, port: int | None, rcpt: tuple[str, ...]) -> None:
    t = parse_target(text)
    assert (t.host, t.port, t.rcpt, t.domain) == (host, port, rcpt, None)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a@b@c.test", "more than one @"),
        ("a..b@c.test", "the local part 'a..b' is not valid"),
        (".a@c.test", "is not valid"),
        ("a(b)@c.test", "is not valid"),
        ("@c.test", "empty local part"),
        ("a@", "empty domain"),
        ("a@[1.2.3]", "not a valid address literal"),
    ],
)
def test_malformed_addresses_are_one_line_usage_errors(text: str, words: str) -> None:
    with pytest.raises(TargetError, match=words.replace("(", r"\(").replace(".", r"\.")):
        parse_target(text)
    for args in ([text], ["probe", "x.test", "--rcpt", text], ["x.test", "--from", text]):
        r = invoke(*args)
        assert r.exit_code == 64, (args, r.output)
        assert r.stderr.count("\n") == 1 and words in r.stderr and "--help" in r.stderr


_ATEXT = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~")


@given(st.characters(codec="utf-8", exclude_characters="@."))
def test_a_local_part_character_is_atext_or_not_ascii(ch: str) -> None:
    # RFC 5322 §3.2.3 atext, and any non-ASCII character (RFC 6532).
    allowed = ch in _ATEXT or not ch.isascii()
    try:
        parse_target(f"a{ch}b@c.test")
    except TargetError:
        assert not allowed, repr(ch)
    else:
        assert allowed, repr(ch)


def test_every_ascii_character_of_a_local_part_is_judged_by_atext() -> None:
    for ch in map(chr, range(0x80)):
        if ch in "@.":
            continue
        try:
            parse_target(f"a{ch}b@c.test")
        except TargetError:
            assert ch not in _ATEXT, repr(ch)
        else:
            assert ch in _ATEXT, repr(ch)


def test_a_quoted_local_part_may_hold_an_at() -> None:
    assert parse_target('"a@b"@c.test').rcpt == ('"a@b"@c.test',)


def probe_seen(server: Server, *args: str, host: str = "127.0.0.1") -> tuple[Result, list[str]]:
    with serving(server, host) as port:
        r = invoke(*[a.replace("PORT", str(port)) for a in args], "--timeout", "2")
    return r, server.seen


@pytest.mark.parametrize(
    "target", ["[127.0.0.1]:PORT", "127.0.0.1:PORT", "user@[127.0.0.1]", "[127.0.0.1]"]
)
def test_ipv4_literals_reach_the_server(target: str) -> None:
    extra = [] if ":PORT" in target else ["--port", "PORT"]
    r, seen = probe_seen(Server(), target, *extra, "--format", "json")
    doc = valid(json.loads(r.stdout))
    assert r.exit_code == 0, r.output
    assert doc["dns"] is None  # an address literal needs no DNS, with or without a mailbox
    assert seen[0] == "EHLO [127.0.0.1]"
    assert ("RCPT TO:<user@[127.0.0.1]>" in seen) == target.startswith("user@")


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("target", ["[::1]:PORT", "[IPv6:::1]", "user@[::1]"])
def test_ipv6_literals_reach_the_server(target: str) -> None:
    extra = [] if ":PORT" in target else ["--port", "PORT"]
    r, seen = probe_seen(Server(), target, *extra, host="::1")
    assert r.exit_code == 0, r.output
    assert seen[0] == "EHLO [IPv6:::1]"
    assert ("RCPT TO:<user@[IPv6:::1]>" in seen) == target.startswith("user@")


@pytest.fixture(scope="module")
def lab_dns() -> Iterator[int]:
    zone = (
        "xn--bcher-kva.test. 60 IN MX 10 mx.xn--bcher-kva.test.\n"
        "mx.xn--bcher-kva.test. 60 IN A 127.0.0.1\n"
        "mx.example.test. 60 IN A 127.0.0.1\n"
        "v4only.test. 60 IN MX 10 mx.example.test.\n"
    )
    lt = LoopThread()
    dns = ZoneDNS(zone)
    try:
        yield lt.run(dns.start())
    finally:
        lt.run(dns.stop())
        lt.close()


def test_host_with_port_and_idn_domain(lab_dns: int) -> None:
    ns = f"127.0.0.1:{lab_dns}"
    r, seen = probe_seen(Server(), "mx.example.test:PORT", "--nameserver", ns)
    assert r.exit_code == 0 and seen[0].startswith("EHLO"), r.output
    r, seen = probe_seen(Server(), "kim@bücher.test", "--port", "PORT", "--nameserver", ns)
    assert r.exit_code == 0, r.output
    assert "RCPT TO:<kim@xn--bcher-kva.test>" in seen  # the A-label: no SMTPUTF8 needed


def test_non_ascii_mailbox_goes_with_smtputf8_only(lab_dns: int) -> None:
    ns = ("--nameserver", f"127.0.0.1:{lab_dns}", "--port", "PORT")
    r, seen = probe_seen(Server(ehlo=("SMTPUTF8",)), "jö@bücher.test", *ns)
    assert r.exit_code == 0, r.output
    assert "MAIL FROM:<> SMTPUTF8" in seen and "RCPT TO:<jö@xn--bcher-kva.test>" in seen
    r, seen = probe_seen(Server(ehlo=("8BITMIME",)), "jö@bücher.test", *ns, "--format", "json")
    doc = valid(json.loads(r.stdout))
    assert not any(c.startswith("RCPT") for c in seen) and "MAIL FROM:<>" in seen
    assert r.exit_code == 69 and doc["verdict"] == "permanent"
    assert "does not offer SMTPUTF8" in doc["reason"]


@pytest.mark.parametrize("sender", ["<>", "", "<kim@example.test>"])
def test_from_as_written(sender: str) -> None:
    _, seen = probe_seen(Server(), "[127.0.0.1]:PORT", "--from", sender)
    assert f"MAIL FROM:<{sender.strip('<>')}>" in seen


def test_starttls_require_that_fails_is_permanent() -> None:
    r, _ = probe_seen(Server(), "[127.0.0.1]:PORT", "--starttls", "require", "--format", "json")
    doc = valid(json.loads(r.stdout))
    assert r.exit_code == 69 and doc["verdict"] == "permanent"
    assert "does not offer STARTTLS" in doc["reason"]


def test_a_family_with_no_address_says_so(lab_dns: int) -> None:
    r = invoke("[127.0.0.1]:25", "-6")
    assert r.exit_code == 68
    assert "no IPv6 address to connect to" in r.stdout and "-6 allows IPv6 only" in r.stdout
    r = invoke("[::1]:25", "-4")
    assert r.exit_code == 68 and "no IPv4 address to connect to" in r.stdout
    r = invoke("v4only.test", "-6", "--nameserver", f"127.0.0.1:{lab_dns}", "--timeout", "2")
    assert r.exit_code == 68 and "no IPv6 address to connect to: v4only.test" in r.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "check"])
def test_every_command_usage_error_is_one_line_with_a_hint(command: str) -> None:
    r = invoke(command, "--no-such-option")
    assert r.exit_code == 64, r.output
    assert r.stderr.count("\n") == 1 and f"smtp-probe {command} --help" in r.stderr
    assert "Traceback" not in r.output


def test_errors_of_our_own_carry_the_hint_too() -> None:
    for args in (["serve", "--listen", "nowhere"], ["x.test", "-4", "-6"], ["schema", "nope"]):
        r = invoke(*args)
        assert r.exit_code == 64 and r.stderr.count("\n") == 1 and "--help')" in r.stderr


def test_check_keeps_the_plugin_convention() -> None:
    r = invoke("check", "--no-such-option")
    assert r.exit_code == 3 and r.stdout.startswith("SMTP UNKNOWN")


@pytest.mark.parametrize("where", ["missing/out.jsonl", "/dev/full"])
def test_unwritable_output_is_one_line_and_74(tmp_path: Path, where: str) -> None:
    path = where if where.startswith("/") else str(tmp_path / where)
    if where.startswith("/") and not Path(where).exists():
        pytest.skip(f"{where} is not on this system")
    r = invoke("batch", "-", "--output", path, input="[127.0.0.1]:1\n")
    assert r.exit_code == 74, r.output
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.output


def test_redactor_is_consistent_within_one_output() -> None:
    r = Redactor(["example.org"])
    out = r.text(
        "550 <kim@example.org> from mx1.example.org[203.0.113.5]; kim@example.org again, "
        "bob@[203.0.113.5], mx.provider.net, 2001:db8:1::5 [IPv6:2001:db8:1::5] at 10:20:30"
    )
    assert out == (
        "550 <user-1@domain-1.example> from host-1.example[192.0.2.1]; "
        "user-1@domain-1.example again, user-2@[192.0.2.1], mx.provider.net, "
        "2001:db8::1 [IPv6:2001:db8::1] at 10:20:30"
    )
    assert Redactor().text("kim@example.org") == "user-1@example.org"  # a new output, new count


def test_redact_on_explain_and_batch() -> None:
    line = "550 5.1.1 <kim@example.org>: rejected by 203.0.113.5 for kim@example.org"
    r = invoke("explain", "--redact", "--format", "json", line)
    doc = valid(json.loads(r.stdout), "explain")
    assert doc[0]["input"] == (
        "550 5.1.1 <user-1@example.org>: rejected by 192.0.2.1 for user-1@example.org"
    )
    text = invoke("explain", "--redact", line).stdout
    assert "kim@" not in text and "203.0.113.5" not in text and "user-1@" in text
    with serving(Server()) as port:
        inputs = "kim@[127.0.0.1]\nbob@[127.0.0.1]\n"
        r = invoke("batch", "-", "--redact", "--port", str(port), "--timeout", "2", input=inputs)
    records = valid_lines(r.stdout)
    assert "127.0.0.1" not in r.stdout and "kim@" not in r.stdout
    assert {rec["sessions"][0]["address"] for rec in records} == {"192.0.2.1"}


def test_batch_expect_decides_the_exit_status() -> None:
    with serving(Server(rcpt="550 5.1.1 no such user")) as bad, serving(Server()) as good:
        ok = f"[127.0.0.1]:{good}\n"
        args = ("batch", "-", "--rcpt", "kim@example.test", "--timeout", "2")
        met = invoke(*args, "--expect", "rcpt=2xx", input=ok)
        both = ok + f"[127.0.0.1]:{bad}\n"
        missed = invoke(*args, "--expect", "rcpt=2xx", input=both)
        plain = invoke(*args, input=both)
    assert met.exit_code == 0, met.output
    assert all(e["met"] for rec in valid_lines(met.stdout) for e in rec["expectations"])
    assert missed.exit_code == 69
    verdicts = sorted(rec["verdict"] for rec in valid_lines(missed.stdout))
    assert verdicts == ["accepted", "expectation_failed"]
    assert plain.exit_code == 0  # without --expect, a record's verdict is its own business


@pytest.mark.parametrize(
    ("lang", "words"),
    [
        ("de", "keine IPv6-Adresse"),
        ("zh", "没有可连接的 IPv6 地址"),
        ("ko", "IPv6 주소가 없습니다"),
    ],
)
def test_a_family_with_no_address_says_so_in_the_language(lang: str, words: str) -> None:
    r = invoke("[127.0.0.1]:25", "-6", "--lang", lang)
    assert r.exit_code == 68
    assert words in r.stdout and "no IPv6 address" not in r.stdout


@given(st.ip_addresses(v=4))
def test_an_ipv4_literal_comes_back_as_ipaddress_writes_it(ip: ipaddress.IPv4Address) -> None:
    assert parse_literal(f"[{ip}]") == str(ip)
    assert is_ip(str(ip)) and is_ip(f"[{ip}]")


@given(st.text(alphabet="0123456789.:[]a ", max_size=24))
def test_an_address_literal_is_what_ipaddress_says(text: str) -> None:
    # The dotted-quad shortcut must take exactly what ipaddress takes, as ipaddress writes it.
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        want: str | None = str(ipaddress.ip_address(inner.removeprefix("IPv6:")))
    except ValueError:
        want = None
    try:
        got: str | None = parse_literal(text)
    except TargetError:
        got = None
    if ":" not in inner:
        assert got == want
    assert is_ip(text) == (_ip(text.strip("[]").rstrip(".")) is not None)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
