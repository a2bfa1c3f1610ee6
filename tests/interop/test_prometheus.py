"""Interop with a real Prometheus: Debian's `prometheus` scrapes `smtp-probe serve` on loopback
with the relabelling blackbox users write, and its HTTP API answers for `probe_success` and
`smtp_probe_reply_info`; `promtool check metrics` accepts what the exporter writes.
`.ci/run` installs the package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from probe.lab.dns import LoopThread, ZoneDNS
from probe.lab.smtp import Scripted, port_of, start_smtp
from tests.interop.test_real_servers import free_port, stop_pid, wait_for_port, workdir

ROOT = Path(__file__).resolve().parent.parent.parent
ZONE = """
ok.test. 60 IN MX 10 mx.ok.test.
mx.ok.test. 60 IN A 127.0.0.1
grey.test. 60 IN MX 10 mx.grey.test.
mx.grey.test. 60 IN A 127.0.0.1
"""
GREY = "450 4.2.0 Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/grey.test.html"


def binary(name: str) -> str:
    found = shutil.which(name) or f"/usr/bin/{name}"
    if not Path(found).exists():
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return found


def get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


@dataclass
class Exporter:
    port: int

    def url(self, path: str, **params: str) -> str:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return f"http://127.0.0.1:{self.port}{path}{query}"


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    lt = LoopThread()
    dns = ZoneDNS(ZONE)
    d = workdir()
    proc = server = None
    try:
        dns_port = lt.run(dns.start())
        handler = Scripted(rcpt={"grey": GREY})
        server = lt.run(start_smtp(handler, host="127.0.0.1"))
        port = free_port()
        (d / "serve.toml").write_text(
            f"""
[server]
nameservers = ["127.0.0.1:{dns_port}"]
min_interval = 5
[targets]
private = ["127.0.0.0/8"]
[modules.smtp_rcpt]
port = {port_of(server)}
timeout = 2
rcpt = ["grey@grey.test"]
""",
            encoding="utf-8",
        )
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "probe",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--config",
                str(d / "serve.toml"),
            ],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        wait_for_port(port)
        yield Exporter(port)
    finally:
        if proc is not None:
            stop_pid(proc.pid)
            proc.wait(timeout=10)
        if server is not None:
            lt.loop.call_soon_threadsafe(server.close)
        lt.run(dns.stop())
        lt.close()
        shutil.rmtree(d, ignore_errors=True)


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    doc = json.loads(get(url))
    assert doc["status"] == "success", doc
    return list(doc["data"]["result"])


def test_prometheus_scrapes_the_exporter(exporter: Exporter) -> None:
    prometheus = binary("prometheus")
    d = workdir()
    web = free_port()
    (d / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: smtp
    metrics_path: /probe
    params:
      module: [smtp_rcpt]
    static_configs:
      - targets: [ok.test, grey.test]
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        target_label: instance
      - target_label: __address__
        replacement: 127.0.0.1:{exporter.port}
""",
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={d / 'prometheus.yml'}",
            f"--storage.tsdb.path={d / 'data'}",
            f"--web.listen-address=127.0.0.1:{web}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(web)
        deadline = time.monotonic() + 30
        found: list[dict[str, Any]] = []
        while time.monotonic() < deadline and len(found) < 2:
            time.sleep(0.5)
            found = query(web, 'probe_success{job="smtp"}')
        by_instance = {r["metric"]["instance"]: r["value"][1] for r in found}
        # The module's recipient is greylisted: both targets fail at RCPT, and say why.
        assert set(by_instance) == {"ok.test", "grey.test"}, found
        assert set(by_instance.values()) == {"0"}
        info = query(web, 'smtp_probe_reply_info{step="rcpt",category="greylisted",retry="yes"}')
        assert {r["metric"]["instance"] for r in info} == {"ok.test", "grey.test"}
        assert {r["metric"]["enhanced"] for r in info} == {"4.2.0"}
        up = query(web, 'up{job="smtp"}')
        assert {r["value"][1] for r in up} == {"1"}
    finally:
        stop_pid(proc.pid)
        proc.wait(timeout=10)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("path", ["/probe", "/metrics"])
def test_promtool_accepts_the_output(exporter: Exporter, path: str) -> None:
    promtool = binary("promtool")
    params = {"target": "grey.test", "module": "smtp_rcpt"} if path == "/probe" else {}
    text = get(exporter.url(path, **params))
    assert "probe_success" in text or "smtp_probe_exporter_probes_total" in text
    p = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stdout + p.stderr
