"""I/O: the opt-in deeper TLS facts of one MX address (`mx --tls-scan`), each from
connections of its own: one per TLS version (STARTTLS, then a handshake with a context
pinned to that version) and one that sends MAIL FROM:<> before STARTTLS. Never DATA: every
connection ends with QUIT (after RSET when MAIL was sent).
"""

from __future__ import annotations

import ssl
import warnings

from probe.config import Timeouts
from probe.result import ErrorKind, TlsInfo
from probe.tlsfacts import (
    VERSIONS,
    MailProbe,
    TlsScan,
    VersionProbe,
    VersionState,
    handshake,
)
from probe.wire import Connection, Failure, Raw

# Debian's OpenSSL 3 will not offer TLS 1.0 or 1.1 at its default security level; the scan
# asks what the server accepts, so its contexts allow every cipher the library still has.
SCAN_CIPHERS = "DEFAULT:@SECLEVEL=0"
_ENUM = {"TLSv1": "TLSv1", "TLSv1.1": "TLSv1_1", "TLSv1.2": "TLSv1_2", "TLSv1.3": "TLSv1_3"}
_BUILT = {"TLSv1": "HAS_TLSv1", "TLSv1.1": "HAS_TLSv1_1", "TLSv1.2": "HAS_TLSv1_2"}


def pinned(version: str, ciphers: str | None = SCAN_CIPHERS) -> ssl.SSLContext:
    """A client context that offers `version` and nothing else (with `ciphers`, or Python's
    default list if None); no verification (the probe's own session judges the
    certificate)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    with warnings.catch_warnings():
        # Naming TLS 1.0 or 1.1 is deprecated in Python; asking about them is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion[_ENUM[version]]
    return ctx


def local_problem(version: str, ciphers: str | None = SCAN_CIPHERS) -> str | None:
    """Why this machine's OpenSSL cannot offer `version` at all (None if it can): the
    ClientHello is written into memory, nothing is sent. (A security level that lets the
    ClientHello out but refuses the server's answer later is not seen here: hence the scan's
    level 0.)"""
    built = _BUILT.get(version, "HAS_TLSv1_3")
    if not getattr(ssl, built, False):
        return f"this OpenSSL ({ssl.OPENSSL_VERSION}) is built without {version}"
    try:
        obj = pinned(version, ciphers).wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
        obj.do_handshake()
    except ssl.SSLWantReadError:
        return None  # the ClientHello is out; it waits for the server
    except (ssl.SSLError, ValueError) as e:
        return f"this OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer {version}: {e}"
    return None


def _first(got: Raw) -> str:
    return f"{got.code} {got.message.splitlines()[0] if got.message else ''}".rstrip()


async def _open(
    address: str, port: int, helo: str, t: Timeouts
) -> tuple[Connection | None, str, bool]:
    """Connected, greeted, EHLO answered: the connection (None: why not) and whether the
    server offers STARTTLS."""
    conn, got = await Connection.open(
        address,
        port,
        tls=None,
        server_hostname=None,
        connect_timeout=t.connect,
        greeting_timeout=t.greeting,
    )
    if conn is None or isinstance(got, Failure):
        return None, got.detail if isinstance(got, Failure) else "no connection", False
    if got.code != 220:
        await _quit(conn, t)
        return None, f"greeting {_first(got)}", False
    ehlo = await conn.command(["EHLO", helo], t.command)
    if isinstance(ehlo, Failure) or ehlo.code != 250:
        await _quit(conn, t)
        why = ehlo.detail if isinstance(ehlo, Failure) else f"EHLO {_first(ehlo)}"
        return None, why, False
    keywords = {line.split(" ")[0].upper() for line in ehlo.message.splitlines()[1:] if line}
    return conn, "", "STARTTLS" in keywords


async def _quit(conn: Connection, t: Timeouts) -> None:
    if conn.alive:
        await conn.command(["QUIT"], t.command)
    await conn.close()


async def _version(
    address: str, port: int, host: str, helo: str, t: Timeouts, version: str, ciphers: str | None
) -> tuple[VersionProbe, bytes | None, int]:
    """One version: the probe, the leaf certificate it saw, and the connections it took."""
    if (why := local_problem(version, ciphers)) is not None:
        return VersionProbe(version, VersionState.UNTESTABLE, why), None, 0
    conn, why, offered = await _open(address, port, helo, t)
    if conn is None:
        return VersionProbe(version, VersionState.FAILED, why), None, 1
    try:
        if not offered:
            return VersionProbe(version, VersionState.FAILED, "STARTTLS not offered"), None, 1
        start = await conn.starttls(pinned(version, ciphers), _sni(host), t.command)
        if start.reply is not None and start.reply.code != 220:
            detail = f"STARTTLS {_first(start.reply)}"
            return VersionProbe(version, VersionState.FAILED, detail), None, 1
        if start.failure is not None:
            tls_failed = start.failure.kind is ErrorKind.TLS_FAILED
            state = VersionState.REFUSED if tls_failed else VersionState.FAILED
            detail = start.failure.detail
            if detail.endswith(": "):  # a server that just hangs up says nothing more
                detail += "the server closed the connection"
            return VersionProbe(version, state, detail), None, 1
        obj = conn.ssl_object()
        got = obj.version() if obj is not None else None
        cipher = obj.cipher() if obj is not None else None
        leaf = obj.getpeercert(binary_form=True) if obj is not None else None
        if got != version:  # a context pinned to one version cannot agree on another
            return VersionProbe(version, VersionState.FAILED, f"negotiated {got}"), leaf, 1
        name = cipher[0] if cipher else None
        return VersionProbe(version, VersionState.ACCEPTED, cipher=name), leaf, 1
    finally:
        await _quit(conn, t)


def _sni(host: str) -> str | None:
    try:
        host.encode("idna")
    except UnicodeError:
        return None
    return host


async def _mail(address: str, port: int, helo: str, t: Timeouts) -> MailProbe:
    """MAIL FROM:<> in plaintext on a server that offers STARTTLS; then RSET and QUIT."""
    conn, why, _ = await _open(address, port, helo, t)
    if conn is None:
        return MailProbe(None, why)
    try:
        got = await conn.command(["MAIL", "FROM:<>"], t.command)
        if isinstance(got, Failure):
            return MailProbe(None, got.detail)
        if conn.alive:
            await conn.command(["RSET"], t.command)
        return MailProbe(got.code // 100 == 2, _first(got))
    finally:
        await _quit(conn, t)


async def scan_address(
    address: str,
    port: int,
    host: str,
    helo: str,
    timeouts: Timeouts,
    tls: TlsInfo,
    ciphers: str | None = SCAN_CIPHERS,
) -> TlsScan:
    """The scan of one address whose probe session got a greeting and offered STARTTLS
    (`tls` is that session's): four connections for the versions, one for MAIL, one after
    the other so the server sees no burst. A version this machine's OpenSSL cannot offer
    with `ciphers` is reported as not testable, and costs no connection."""
    if not tls.offered:
        return TlsScan(skipped="STARTTLS not offered")
    versions: list[VersionProbe] = []
    leaf: bytes | None = None
    used = 0
    for version in VERSIONS:
        got, seen, n = await _version(address, port, host, helo, timeouts, version, ciphers)
        versions.append(got)
        leaf, used = seen or leaf, used + n
    mail = await _mail(address, port, helo, timeouts)
    return TlsScan(tuple(versions), mail, handshake(tls, leaf), used + 1)
