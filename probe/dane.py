"""Pure DANE for SMTP (RFC 7672, RFC 6698/7671): TLSA records judged against the chain a
server sent, as a DANE-enforcing sender judges them.

Only DANE-TA(2) and DANE-EE(3) count for SMTP; PKIX-TA(0) and PKIX-EE(1) are unusable
(RFC 7672 §3.1.3). Under DANE-EE the certificate's names and dates do not matter (§3.1.1);
under DANE-TA the chain must lead to the matched anchor and name the host (§3.2.2).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from probe.certs import anchored_error, certificate_facts, name_matches, spki


class DaneStatus(StrEnum):
    VALIDATED = "validated"  # a usable record matches and, for DANE-TA, the chain holds
    FAILED = "failed"  # usable records, none of which the server's chain satisfies
    UNUSABLE = "unusable"  # only records a sender may not use: TLS is still mandatory
    NONE = "none"  # no TLSA records, or none that a sender can trust
    BOGUS = "bogus"  # the TLSA answer (or its denial) failed DNSSEC validation
    INDETERMINATE = "indeterminate"  # the TLSA lookup failed, or there is no chain to judge


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: str  # lower-case hex

    @property
    def usable(self) -> bool:
        """Usages DANE-TA/DANE-EE with a known selector and matching type (RFC 7672 §3.1)."""
        return self.usage in (2, 3) and self.selector in (0, 1) and self.mtype in (0, 1, 2)

    def text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data}"


@dataclass(frozen=True, slots=True)
class DaneCheck:
    status: DaneStatus
    detail: str = ""
    record: str | None = None  # the record that matched


def parse_tlsa(text: str) -> Tlsa | None:
    """A TLSA record in presentation form ("3 1 1 ab12..."); None if it is not one."""
    parts = text.split()
    if len(parts) < 4 or not all(p.isdigit() for p in parts[:3]):
        return None
    data = "".join(parts[3:]).lower()
    try:
        bytes.fromhex(data)
    except ValueError:
        return None
    return Tlsa(int(parts[0]), int(parts[1]), int(parts[2]), data)


def _digest(content: bytes, mtype: int) -> str:
    if mtype == 1:
        return hashlib.sha256(content).hexdigest()
    if mtype == 2:
        return hashlib.sha512(content).hexdigest()
    return content.hex()


def matches(rec: Tlsa, der: bytes) -> bool:
    """Whether the record's association data matches this certificate, by its selector
    (0 the whole certificate, 1 its public key) and matching type (0 exact, 1 SHA-256,
    2 SHA-512)."""
    if rec.selector not in (0, 1) or rec.mtype not in (0, 1, 2):
        return False
    content = der if rec.selector == 0 else spki(der)
    return content is not None and _digest(content, rec.mtype) == rec.data


def _trust_anchor(rec: Tlsa, chain: Sequence[bytes]) -> bytes | None:
    """The certificate a DANE-TA record names: one the server sent above its leaf, or the
    record's own data when it holds a whole certificate (2 0 0)."""
    for der in chain[1:]:
        if matches(rec, der):
            return der
    if rec.selector == 0 and rec.mtype == 0:
        return bytes.fromhex(rec.data)
    return None


def _names_error(leaf: bytes, names: Sequence[str]) -> str | None:
    cert = certificate_facts(leaf)
    if cert is None:
        return "the certificate's names cannot be read"
    if any(name_matches(n, cert) for n in names if n):
        return None
    held = ", ".join(cert.sans) or cert.subject
    return f"the certificate names {held}, not {' or '.join(n for n in names if n)}"


def verify(
    records: Sequence[str],
    chain: Sequence[bytes],
    names: Sequence[str],
    now: datetime | None = None,
) -> DaneCheck:
    """Judge a chain against a secure TLSA RRset; `names` are the reference identifiers
    (the TLSA base domain and the MX host name, RFC 7672 §3.2.2)."""
    usable = [r for r in map(parse_tlsa, records) if r is not None and r.usable]
    if not usable:
        return DaneCheck(DaneStatus.UNUSABLE, "no record of usage 2 or 3 (RFC 7672 §3.1.3)")
    if not chain:
        return DaneCheck(DaneStatus.INDETERMINATE, "the server sent no certificate to match")
    for rec in usable:
        if rec.usage == 3 and matches(rec, chain[0]):
            return DaneCheck(DaneStatus.VALIDATED, "DANE-EE", rec.text())
    why = "no TLSA record matches the certificate or the chain the server sent"
    for rec in usable:
        if rec.usage != 2 or (anchor := _trust_anchor(rec, chain)) is None:
            continue
        problem = anchored_error(anchor, chain, now) or _names_error(chain[0], names)
        if problem is None:
            return DaneCheck(DaneStatus.VALIDATED, "DANE-TA", rec.text())
        why = f"the DANE-TA record {rec.text()[:40]} matches, but {problem}"
    return DaneCheck(DaneStatus.FAILED, why)


def rollover_ready(records: Sequence[str], chain: Sequence[bytes]) -> bool:
    """Whether a key change can happen without failed deliveries: a usable record for
    something the server does not present yet (the next key), or a DANE-TA record next to
    the DANE-EE ones (a new leaf under the same anchor still matches)."""
    usable = [r for r in map(parse_tlsa, records) if r is not None and r.usable]
    if {r.usage for r in usable} == {2, 3}:
        return True
    return any(not any(matches(r, der) for der in _candidates(r, chain)) for r in usable)


def _candidates(rec: Tlsa, chain: Sequence[bytes]) -> Sequence[bytes]:
    return chain[:1] if rec.usage == 3 else chain[1:]
