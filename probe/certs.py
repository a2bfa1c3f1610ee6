"""Pure certificate facts: what a certificate says, whether it names a host, whether a chain
leads to a trusted root. No I/O: the trust store comes in as loaded certificates.

The certificates come from servers, so nothing about them is assumed: whatever cryptography
cannot read becomes the reason a chain is not trusted, never an exception.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509 import verification as xv

from probe.messages import msg
from probe.result import Certificate

# What cryptography raises on a certificate it cannot read, besides ValueError (its parse
# errors): duplicate extensions, unknown name types, versions and key algorithms, dates
# beyond what datetime holds.
UNREADABLE: tuple[type[Exception], ...] = (
    ValueError,
    TypeError,
    OverflowError,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
    x509.InvalidVersion,
    UnsupportedAlgorithm,
)


@dataclass(frozen=True, slots=True)
class Judgement:
    """A chain's standing against a trust store: trusted, or the reason it is not.

    `names_known` is False when the names the leaf holds could not be read: whether it
    names a host is then unknown, not "no"."""

    certificate: Certificate | None
    trusted: bool
    error: str | None
    names_known: bool = True


def _why(e: Exception) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


@contextmanager
def _quiet() -> Iterator[None]:
    # Quirks cryptography still accepts (a serial that is not positive, a country name of
    # the wrong length) are warnings, which would be printed mid-transcript (or raised, where
    # warnings are errors); the verification reports what matters as the reason instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def load(der: bytes) -> x509.Certificate:
    """Parse one DER certificate; raises one of UNREADABLE."""
    with _quiet():
        return x509.load_der_x509_certificate(der)


def _sans(cert: x509.Certificate) -> tuple[list[str], str | None]:
    """The DNS names and addresses the certificate holds, or why they cannot be read."""
    try:
        with _quiet():
            ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
        return names + [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)], None
    except x509.ExtensionNotFound:
        return [], None
    except UNREADABLE as e:
        return [], msg("cert.unreadable_names", why=_why(e))


def facts(cert: x509.Certificate, der: bytes, now: datetime | None = None) -> Certificate:
    """Subject, issuer, names and validity of a parsed certificate (raises one of UNREADABLE
    when the subject or issuer cannot be read)."""
    not_after = cert.not_valid_after_utc
    with _quiet():
        subject, issuer = cert.subject.rfc4514_string(), cert.issuer.rfc4514_string()
    return Certificate(
        subject=subject,
        issuer=issuer,
        sans=tuple(_sans(cert)[0]),
        not_before=cert.not_valid_before_utc.isoformat(),
        not_after=not_after.isoformat(),
        days_left=(not_after - (now or datetime.now(UTC))).days,
        sha256=hashlib.sha256(der).hexdigest(),
        der=der,
    )


def certificate_facts(der: bytes) -> Certificate | None:
    """Facts of a DER certificate; None when it cannot be parsed."""
    try:
        return facts(load(der), der)
    except UNREADABLE:
        return None


def spki(der: bytes) -> bytes | None:
    """The DER SubjectPublicKeyInfo of a certificate (what DANE selector 1 hashes); None when
    the certificate or its key cannot be read."""
    # Here, not at the top: only DANE needs it, and the package costs 4 ms of start-up.
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        key = load(der).public_key()
        return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    except UNREADABLE:
        return None


def with_days_left(cert: Certificate, now: datetime | None = None) -> Certificate:
    """The same facts with `days_left` counted from now (cached facts age)."""
    left = (datetime.fromisoformat(cert.not_after) - (now or datetime.now(UTC))).days
    return cert if left == cert.days_left else cert._replace(days_left=left)


def counted_until(cert: Certificate) -> float:
    """The POSIX time up to which `cert.days_left` stays true (it drops by one just after)."""
    return datetime.fromisoformat(cert.not_after).timestamp() - cert.days_left * 86400


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
    except x509.ExtensionNotFound:
        return None
    except UNREADABLE:
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
        return msg("cert.no_host")
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
        return msg("cert.expired") if now > end else msg("cert.not_yet_valid")
    if leaf.issuer == leaf.subject and not rest:
        return msg("cert.self_signed")
    if "candidates exhausted" in first:
        return msg("cert.unknown_issuer")
    return first.split(" (encountered", 1)[0].removeprefix("validation failed: ")


def judge(store: xv.Store, chain: Sequence[bytes], now: datetime | None = None) -> Judgement:
    """The leaf's facts and whether the chain the server sent leads to a trusted root."""
    now = now or datetime.now(UTC)
    if not chain:
        return Judgement(None, False, msg("cert.none_sent"), names_known=False)
    try:
        leaf = load(chain[0])
        cert = facts(leaf, chain[0], now)
    except UNREADABLE as e:
        why = msg("cert.unparsable", why=_why(e))
        return Judgement(None, False, why, names_known=False)
    unreadable_names = _sans(leaf)[1]
    if unreadable_names is not None:
        return Judgement(cert, False, unreadable_names, names_known=False)
    try:
        rest = [load(der) for der in chain[1:]]
    except UNREADABLE as e:
        return Judgement(cert, False, msg("cert.chain_unparsable", why=_why(e)))
    try:
        with _quiet():
            error = _chain_error(store, leaf, rest, now)
    except UNREADABLE as e:  # a certificate the verifier cannot read at all
        error = msg("cert.unverifiable", why=_why(e))
    return Judgement(cert, error is None, error)


def anchored_error(
    anchor: bytes, chain: Sequence[bytes], now: datetime | None = None
) -> str | None:
    """None when the chain leads to `anchor` (a DANE-TA trust anchor, RFC 7671 §5.2.2) with
    valid signatures and dates, else why not; the leaf's names are checked apart."""
    try:
        store = xv.Store([load(anchor)])
        leaf, rest = load(chain[0]), [load(der) for der in chain[1:]]
        with _quiet():
            return _chain_error(store, leaf, rest, now or datetime.now(UTC))
    except UNREADABLE as e:
        return f"the chain cannot be verified: {_why(e)}"
