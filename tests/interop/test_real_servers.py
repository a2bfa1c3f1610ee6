"""Interop with servers nobody on this project wrote: Debian's Postfix and NSD.

The tests start them on loopback, on free non-default ports, from the configuration in this
folder (never the system's), and stop them by PID. `.ci/run` installs both packages.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from click.testing import CliRunner

from probe.cli import cli
from probe.resolve import make_resolver, resolve_domain
from probe.result import DnsStatus

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def workdir() -> Path:
    # Postfix daemons run as the `postfix` user: pytest's 0700 temp root would lock them out.
    d = Path(tempfile.mkdtemp(prefix="smtp-probe-interop-", dir="/tmp"))
    d.chmod(0o755)
    return d


@dataclass
class Postfix:
    port: int
    refuse_port: int
    cafile: str


@pytest.fixture(scope="module")
def postfix() -> Iterator[Postfix]:
    binary = shutil.which("postfix") or "/usr/sbin/postfix"
    if not Path(binary).exists():
        pytest.skip("Postfix is not installed (apt-get install postfix)")
    if os.geteuid() != 0:
        pytest.skip("Postfix's master process must start as root")
    d = workdir()
    ca = trustme.CA()
    cert = ca.issue_cert("mail.interop.test")
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    port, refuse = free_port(), free_port()
    (d / "data").mkdir()
    (d / "spool").mkdir()
    shutil.chown(d / "data", user="postfix")
    (d / "main.cf").write_text((HERE / "main.cf.in").read_text().format(dir=d))
    (d / "master.cf").write_text(
        (HERE / "master.cf.in").read_text().format(port=port, refuse_port=refuse)
    )
    started = subprocess.run(
        [binary, "-c", str(d), "start"], capture_output=True, text=True, timeout=60
    )
    pid_file = d / "spool" / "pid" / "master.pid"
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        wait_for_port(port)
        wait_for_port(refuse)
        yield Postfix(port, refuse, str(d / "ca.pem"))
    finally:
        if pid_file.exists():
            stop_pid(int(pid_file.read_text().strip()))
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def nsd() -> Iterator[int]:
    binary = shutil.which("nsd") or "/usr/sbin/nsd"
    if not Path(binary).exists():
        pytest.skip("NSD is not installed (apt-get install nsd)")
    d = workdir()
    port = free_port()
    (d / "nsd.conf").write_text((HERE / "nsd.conf.in").read_text().format(dir=d, port=port))
    shutil.copy(HERE / "interop.test.zone", d / "interop.test.zone")
    proc = subprocess.Popen(
        [binary, "-d", "-c", str(d / "nsd.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


def probe_json(*args: str) -> tuple[int, dict[str, Any]]:
    r = CliRunner().invoke(
        cli, [*args, "--format", "json", "--timeout", "5", "--helo", "probe.test"]
    )
    return r.exit_code, json.loads(r.stdout)


def rcpt_steps(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [st for st in doc["sessions"][-1]["steps"] if st["command"] == "RCPT"]


def test_postfix_greeting_ehlo_and_starttls(postfix: Postfix) -> None:
    status, doc = probe_json(
        f"[127.0.0.1]:{postfix.port}", "--cafile", postfix.cafile, "--rcpt", "known@interop.test"
    )
    assert status == 0, doc["reason"]
    s = doc["sessions"][0]
    greeting = s["steps"][0]
    assert greeting["command"] == "CONNECT"
    assert greeting["reply"]["lines"] == ["220 mail.interop.test ESMTP interop"]
    keywords = {e["keyword"] for e in s["extensions"]}
    assert {"PIPELINING", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING"} <= keywords
    assert s["tls"]["ok"] and s["tls"]["trusted"] and s["tls"]["protocol"] in ("TLSv1.2", "TLSv1.3")
    assert s["tls"]["certificate"]["sans"] == ["mail.interop.test"]
    assert rcpt_steps(doc)[0]["reply"]["code"] == 250


def test_postfix_unknown_user_and_relay_denied(postfix: Postfix) -> None:
    status, doc = probe_json(
        f"[127.0.0.1]:{postfix.port}",
        "--rcpt",
        "known@interop.test",
        "--rcpt",
        "nobody@interop.test",
        "--rcpt",
        "someone@elsewhere.test",
    )
    assert status == 69
    known, unknown, relay = (st["reply"] for st in rcpt_steps(doc))
    assert known["code"] == 250
    assert unknown["code"] == 550 and unknown["enhanced"] == "5.1.1"
    assert unknown["category"] == "user_unknown" and unknown["retryable"] is False
    assert "User unknown in local recipient table" in unknown["lines"][0]
    assert relay["code"] == 554 and relay["enhanced"] == "5.7.1"
    assert relay["category"] == "relay_denied"


def test_postfix_refusing_at_connect(postfix: Postfix) -> None:
    status, doc = probe_json(f"[127.0.0.1]:{postfix.refuse_port}")
    assert status == 69
    greeting = doc["sessions"][0]["steps"][0]
    assert greeting["command"] == "CONNECT" and greeting["reply"]["code"] == 554
    assert "Client host rejected" in greeting["reply"]["lines"][0]
    assert doc["sessions"][0]["steps"][1]["command"] == "QUIT"


async def test_nsd_zone_outcomes(nsd: int) -> None:
    res = make_resolver([("127.0.0.1", nsd)], timeout=2, lifetime=5)
    mx = await resolve_domain(res, "interop.test")
    assert [(h.host, h.preference, h.addresses) for h in mx.mx] == [
        ("mail.interop.test", 10, ("127.0.0.1",))
    ]
    equal = await resolve_domain(res, "equal.interop.test")
    assert sorted(h.host for h in equal.mx) == [f"{c}.equal.interop.test" for c in "abc"]
    assert (await resolve_domain(res, "nullmx.interop.test")).null_mx
    cname = await resolve_domain(res, "cname.interop.test")
    assert cname.mx[0].cname == "mail.interop.test"
    dangling = await resolve_domain(res, "dangling.interop.test")
    assert dangling.mx[0].status is DnsStatus.NXDOMAIN
    assert (await resolve_domain(res, "nowhere.interop.test")).status is DnsStatus.NXDOMAIN
    big = await resolve_domain(res, "big.interop.test")  # truncated over UDP, then TCP
    assert len(big.mx) == 40 and big.mx[0].addresses == ("127.0.0.1",)


def test_probe_through_nsd_to_postfix(nsd: int, postfix: Postfix) -> None:
    status, doc = probe_json(
        "nobody@interop.test",
        "--nameserver",
        f"127.0.0.1:{nsd}",
        "--port",
        str(postfix.port),
        "--cafile",
        postfix.cafile,
    )
    assert status == 69
    assert doc["mx"][0]["host"] == "mail.interop.test"
    assert rcpt_steps(doc)[0]["reply"]["enhanced"] == "5.1.1"
    assert doc["sessions"][0]["tls"]["name_matches"] is True
    null_status, null_doc = probe_json("a@nullmx.interop.test", "--nameserver", f"127.0.0.1:{nsd}")
    assert null_status == 68 and null_doc["verdict"] == "null_mx"


def test_postfix_user_exists() -> None:
    """The package's own user must exist for the daemons (a sanity check of the install)."""
    if not shutil.which("postfix"):
        pytest.skip("Postfix is not installed")
    assert pwd.getpwnam("postfix").pw_uid > 0
