"""I/O: fetch an MTA-STS policy over HTTPS (RFC 8461 §3.3) with httpx.

The policy host is resolved with the run's resolver (`--nameserver` included) and the
connection goes to that address while the certificate is verified for `mta-sts.<domain>`
(the TLS server name), against the system's CAs and `--cafile`. No redirects are followed,
the body is read to at most 64 KB, and the whole fetch has one deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import TYPE_CHECKING

from probe.checks import PolicyFacts
from probe.mtasts import parse_policy
from probe.resolve import Resolver, lookup
from probe.tls import trust_context

if TYPE_CHECKING:
    import httpx

POLICY_LIMIT = 64 * 1024  # RFC 8461 §3.2: policies are small; refuse to read more
POLICY_PATH = "/.well-known/mta-sts.txt"


async def _address(res: Resolver, host: str) -> tuple[str | None, str]:
    """The first address of the policy host, or why there is none."""
    why = ""
    for kind in ("A", "AAAA"):
        got = await lookup(res, host, kind)
        if got.records:
            return got.records[0], ""
        why = why or (got.error or got.status.value)
    return None, f"{host} has no address ({why})"


async def _body(resp: httpx.Response, url: str) -> bytes | str:
    """The body, read whole up to the limit; or why it cannot be used."""
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) > POLICY_LIMIT:
        return f"the policy at {url} is larger than 64 KB"
    data = bytearray()
    async for chunk in resp.aiter_raw():
        data += chunk
        if len(data) > POLICY_LIMIT:
            return f"the policy at {url} is larger than 64 KB"
    return bytes(data)


def _status_problem(resp: httpx.Response, url: str) -> str | None:
    if resp.is_redirect:
        where = resp.headers.get("location", "?")[:100]
        return f"{url} answered {resp.status_code} to {where}: redirects are not followed (RFC 8461 §3.3)"
    if resp.status_code != 200:
        return f"{url} answered {resp.status_code}, not 200"
    kind = resp.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
    if kind != "text/plain":
        return f"{url} sent {kind!r}, not text/plain"
    return None


def _why(e: Exception) -> str:
    cause = e.__cause__ or e.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"certificate not valid for the policy host: {cause.verify_message}"
    text = " ".join(str(e).split()) or type(e).__name__
    if "closed" in text.lower() or "incomplete" in text.lower():
        return f"the connection closed before the whole response came ({text[:120]})"
    return text[:200]


async def fetch_policy(
    res: Resolver,
    domain: str,
    *,
    port: int = 443,
    cafile: str | None = None,
    timeout: float = 10.0,
) -> PolicyFacts:
    """GET https://mta-sts.<domain>/.well-known/mta-sts.txt, connected through our resolver."""
    import httpx  # loaded by the one command that needs it

    host = f"mta-sts.{domain}"
    address, why = await _address(res, host)
    if address is None:
        return PolicyFacts(False, why)
    url = f"https://{host}{POLICY_PATH}"
    literal = f"[{address}]" if ":" in address else address
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(
                verify=trust_context(cafile),
                follow_redirects=False,
                timeout=timeout,
                trust_env=False,  # no proxy from the environment: we connect where DNS says
            ) as client,
            client.stream(
                "GET",
                f"https://{literal}:{port}{POLICY_PATH}",
                headers={"Host": host, "User-Agent": "smtp-probe"},
                extensions={"sni_hostname": host},
            ) as resp,
        ):
            if (problem := _status_problem(resp, url)) is not None:
                return PolicyFacts(False, problem)
            body = await _body(resp, url)
    except (TimeoutError, httpx.TimeoutException):
        return PolicyFacts(False, f"{url} sent no whole response within {timeout:g} s")
    except httpx.HTTPError as e:
        return PolicyFacts(False, f"{url} failed: {_why(e)}")
    if isinstance(body, str):
        return PolicyFacts(False, body)
    policy = parse_policy(body.decode("utf-8", "replace"))
    return PolicyFacts(
        True, None, policy.mode, policy.mx, policy.version, policy.max_age, policy.problems
    )
