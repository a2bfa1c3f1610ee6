"""Pure MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) parsing: the TXT records and the policy
text, each with the problems a sender would stop at."""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_AGE_LIMIT = 31_557_600  # RFC 8461 §3.2: at most a year
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_MODES = ("enforce", "testing", "none")


@dataclass(frozen=True, slots=True)
class Policy:
    version: str | None = None
    mode: str | None = None
    mx: tuple[str, ...] = ()
    max_age: int | None = None
    problems: tuple[str, ...] = ()


def _tags(record: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in record.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq:
            out.setdefault(key.strip(), value.strip())
    return out


def sts_record_problems(records: tuple[str, ...]) -> list[str]:
    """Why the `_mta-sts` TXT records do not announce a policy (RFC 8461 §3.1); empty if
    they do."""
    sts = [r for r in records if r.startswith("v=STSv1")]
    if len(sts) > 1:
        return [f"{len(sts)} records start with v=STSv1; senders then assume no policy"]
    if not sts:
        return ["no record starts with v=STSv1 (case and spacing matter)"]
    tags = _tags(sts[0])
    ident = tags.get("id")
    if ident is None:
        return ["the record has no id= field"]
    if not _ID.fullmatch(ident):
        return [f"the id {ident[:40]!r} is not 1 to 32 letters and digits"]
    return []


def parse_policy(text: str) -> Policy:
    """The policy's fields and what is wrong with them (RFC 8461 §3.2)."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if not colon:
            continue
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(value)
        else:
            fields.setdefault(key, value)
    problems = []
    version, mode, age = fields.get("version"), fields.get("mode"), fields.get("max_age")
    if version != "STSv1":
        problems.append(f"version is {version!r}, not 'STSv1'")
    if mode not in _MODES:
        problems.append(f"mode is {mode!r}, not enforce, testing or none")
    if mode in ("enforce", "testing") and not mx:
        problems.append("no mx: lines")
    max_age = int(age) if age is not None and age.isascii() and age.isdigit() else None
    if max_age is None:
        problems.append(f"max_age is {age!r}, not a number of seconds")
    elif max_age > MAX_AGE_LIMIT:
        problems.append(f"max_age {max_age} is over the limit of {MAX_AGE_LIMIT} (a year)")
    return Policy(version, mode, tuple(mx), max_age, tuple(problems))


def tlsrpt_problems(records: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The report URIs of the `_smtp._tls` record and what is wrong with it (RFC 8460 §3)."""
    rpt = [r for r in records if r.startswith("v=TLSRPTv1")]
    if len(rpt) != 1:
        return [], [f"{len(rpt)} records start with v=TLSRPTv1; exactly one is needed"]
    rua = _tags(rpt[0]).get("rua")
    if not rua:
        return [], ["the record has no rua= field"]
    uris = [u.strip() for u in rua.split(",")]
    bad = [u for u in uris if not re.fullmatch(r"mailto:[^@\s]+@[^@\s]+|https://\S+", u)]
    return uris, [f"{u[:60]!r} is not a mailto: or https: URI" for u in bad]
