"""Pure certificate facts: what a certificate says, whether it names a host, whether a chain
leads to a trusted root. No I/O: the trust store comes in as loaded certificates."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509 import verification as xv

from probe.result import Certificate


@dataclass(frozen=True, slots=True)
class Judgement:
    """A chain's standing against a trust store: trusted, or the reason it is not."""

    certificate: Certificate | None
    trusted: bool
    error: str | None


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
    return names + [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]


def facts(cert: x509.Certificate, der: bytes, now: datetime | None = None) -> Certificate:
    """Subject, issuer, names and validity of a parsed certificate."""
    not_after = cert.not_valid_after_utc
    try:
        sans = _sans(cert)
    except ValueError:  # a malformed extension: the other facts still stand
        sans = []
    return Certificate(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        sans=tuple(sans),
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=not_after.isoformat(),
        days_left=(not_after - (now or datetime.now(UTC))).days,
        sha256=hashlib.sha256(der).hexdigest(),
        der=der,
    )


def certificate_facts(der: bytes) -> Certificate | None:
    """Facts of a DER certificate; None when it cannot be parsed."""
    try:
        return facts(x509.load_der_x509_certificate(der), der)
    except ValueError:
        return None


def with_days_left(cert: Certificate, now: datetime | None = None) -> Certificate:
    """The same facts with `days_left` counted from now (cached facts age)."""
    left = (datetime.fromisoformat(cert.not_after) - (now or datetime.now(UTC))).days
    return cert if left == cert.days_left else cert._replace(days_left=left)


def name_matches(host: str, cert: Certificate) -> bool:
    """Whether the certificate names `host` (RFC 6125: one leftmost wildcard label)."""
    host = host.rstrip(".").lower()
    names = [n.lower().rstrip(".") for n in cert.sans]
    if not names:
        cn = [p[3:] for p in cert.subject.split(",") if p.upper().startswith("CN=")]
        names = [c.lower() for c in cn]
    for name in names:
        if name == host:
            return True
        if name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]:
            return True
    return False


def _verifier(
    store: xv.Store, subject: x509.DNSName | x509.IPAddress, at: datetime
) -> xv.ServerVerifier:
    # OpenSSL's leniency towards leaf extensions (what MTAs verify with), the Web PKI's rules
    # for CAs. The name is checked apart (name_matches), so the leaf's own name is used here.
    san = x509.SubjectAlternativeName
    ee = xv.ExtensionPolicy.permit_all().require_present(san, xv.Criticality.AGNOSTIC, None)
    builder = xv.PolicyBuilder().store(store).time(at)
    builder = builder.extension_policies(
        ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee
    )
    return builder.build_server_verifier(subject)


def _own_name(leaf: x509.Certificate) -> x509.DNSName | x509.IPAddress | None:
    try:
        ext = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    for dns_name in ext.get_values_for_type(x509.DNSName):
        if dns_name.startswith("*."):  # a name the wildcard covers
            dns_name = "wildcard" + dns_name[1:]
        try:
            return x509.DNSName(dns_name)
        except ValueError:
            continue
    for ip in ext.get_values_for_type(x509.IPAddress):
        return x509.IPAddress(ip)
    return None


def _chain_error(
    store: xv.Store, leaf: x509.Certificate, rest: Sequence[x509.Certificate], now: datetime
) -> str | None:
    """None when the chain leads to a root in `store` at `now`, else OpenSSL-like words."""
    subject = _own_name(leaf)
    if subject is None:
        return "the certificate names no host (no subjectAltName)"
    try:
        _verifier(store, subject, now).verify(leaf, list(rest))
        return None
    except xv.VerificationError as e:
        first = str(e)
    # Tell "expired" from "unknown issuer" the way OpenSSL's messages do: the same chain
    # checked within the leaf's own validity.
    start, end = leaf.not_valid_before_utc, leaf.not_valid_after_utc
    try:
        _verifier(store, subject, start + (end - start) / 2).verify(leaf, list(rest))
    except xv.VerificationError:
        pass
    else:
        return "certificate has expired" if now > end else "certificate is not yet valid"
    if leaf.issuer == leaf.subject and not rest:
        return "self-signed certificate"
    if "candidates exhausted" in first:
        return "unable to get local issuer certificate"
    return first.split(" (encountered", 1)[0].removeprefix("validation failed: ")


def judge(store: xv.Store, chain: Sequence[bytes], now: datetime | None = None) -> Judgement:
    """The leaf's facts and whether the chain the server sent leads to a trusted root."""
    now = now or datetime.now(UTC)
    try:
        parsed = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        return Judgement(None, False, "the server's certificate cannot be parsed")
    if not parsed:
        return Judgement(None, False, "the server sent no certificate")
    leaf = parsed[0]
    try:
        error = _chain_error(store, leaf, parsed[1:], now)
    except ValueError as e:  # a certificate the verifier cannot read at all
        error = f"the certificate cannot be verified: {e}"
    return Judgement(facts(leaf, chain[0], now), error is None, error)
