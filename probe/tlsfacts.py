"""Pure: the deeper TLS facts of one MX address that `mx --tls-scan` gathers (the TLS
versions it accepts, whether it takes MAIL before STARTTLS), and what the handshake a
default client made tells about its key exchange and the certificate's key and signature.

Python's ssl module (3.11 to 3.13) exposes neither the negotiated key exchange group nor the
handshake's signature scheme; those are reported as unknown with that reason, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from probe.certs import UNREADABLE, load
from probe.result import TlsInfo

VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
LEGACY = ("TLSv1", "TLSv1.1")  # deprecated by RFC 8996
GROUP_UNKNOWN = "Python's ssl module does not expose the negotiated group"
SIGNATURE_UNKNOWN = (
    "Python's ssl module does not expose the handshake's signature scheme; "
    "shown is the certificate's own signature"
)


class VersionState(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    UNTESTABLE = "not-testable"  # this machine's OpenSSL cannot offer the version at all
    FAILED = "failed"  # no answer to the question: no greeting, STARTTLS refused, ...


@dataclass(frozen=True, slots=True)
class VersionProbe:
    """One connection with a context pinned to one TLS version."""

    version: str
    state: VersionState
    detail: str = ""
    cipher: str | None = None


@dataclass(frozen=True, slots=True)
class MailProbe:
    """MAIL FROM:<> sent in plaintext, before STARTTLS; None: no answer (see `reply`)."""

    accepted: bool | None
    reply: str


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the probe's default handshake (the one a sender makes) shows."""

    protocol: str
    cipher: str
    key_exchange: str  # ECDHE, DHE, RSA (none: no forward secrecy), or ECDHE/DHE (TLS 1.3)
    forward_secret: bool | None
    key: str | None  # the certificate's public key: "RSA 2048", "EC secp256r1"
    signature: str | None  # the certificate's signature algorithm
    group: str | None = None  # always None on Python <= 3.13: see GROUP_UNKNOWN
    group_note: str = GROUP_UNKNOWN
    signature_note: str = SIGNATURE_UNKNOWN


@dataclass(frozen=True, slots=True)
class TlsScan:
    versions: tuple[VersionProbe, ...] = ()
    mail: MailProbe | None = None
    handshake: Handshake | None = None
    connections: int = 0  # opened for the scan, besides the probe's own session
    skipped: str = ""  # why nothing was scanned (no greeting, no STARTTLS)

    def accepted(self) -> tuple[str, ...]:
        return tuple(v.version for v in self.versions if v.state is VersionState.ACCEPTED)

    def legacy(self) -> tuple[str, ...]:
        return tuple(v for v in self.accepted() if v in LEGACY)


def key_exchange(protocol: str, cipher: str) -> tuple[str, bool | None]:
    """The key exchange a cipher suite names, and whether it is forward secret. TLS 1.3
    suites name none: every TLS 1.3 key exchange is an ephemeral (EC)DHE one."""
    if protocol == "TLSv1.3" or cipher.startswith("TLS_"):
        return "ECDHE/DHE", True
    parts = cipher.upper().split("-")
    for kx in ("ECDHE", "DHE", "ECDH", "DH", "PSK", "SRP"):
        if parts[0] == kx or parts[0] == f"{kx}_":
            return kx, kx in ("ECDHE", "DHE")
    if parts[0] in ("EDH", "EECDH"):
        return ("DHE" if parts[0] == "EDH" else "ECDHE"), True
    # OpenSSL names suites with RSA key transport by their cipher alone ("AES256-GCM-SHA384").
    return "RSA", False


def public_key(der: bytes) -> tuple[str | None, str | None]:
    """The certificate's key ("RSA 2048", "EC secp256r1", "Ed25519") and signature algorithm."""
    try:
        cert = load(der)
        key = cert.public_key()
    except UNREADABLE:
        return None, None
    kind: str | None
    if isinstance(key, rsa.RSAPublicKey):
        kind = f"RSA {key.key_size}"
    elif isinstance(key, ec.EllipticCurvePublicKey):
        kind = f"EC {key.curve.name}"
    elif isinstance(key, dsa.DSAPublicKey):
        kind = f"DSA {key.key_size}"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        kind = "Ed25519"
    elif isinstance(key, ed448.Ed448PublicKey):
        kind = "Ed448"
    else:
        kind = type(key).__name__
    oid = cert.signature_algorithm_oid
    return kind, getattr(oid, "_name", None) or oid.dotted_string


def handshake(tls: TlsInfo, leaf: bytes | None) -> Handshake | None:
    """The facts of a completed handshake; `leaf` when the session sent no certificate
    (a resumed session) but another connection did."""
    if not tls.ok or not tls.protocol or not tls.cipher:
        return None
    kx, fs = key_exchange(tls.protocol, tls.cipher)
    der = tls.certificate.der if tls.certificate is not None and tls.certificate.der else leaf
    key, sig = public_key(der) if der else (None, None)
    return Handshake(tls.protocol, tls.cipher, kx, fs, key, sig)
