"""`--redact`: replace mail addresses, the user's own host names and IP addresses in one
output with numbered placeholders, the same value always by the same placeholder, so that the
output can be pasted into a ticket and still be read ("user-1 was refused by host-2")."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

# What may stand around an "@" in an address: scanned outwards from each "@", so the cost is
# linear in the text (a regex anchored nowhere would rescan a long run of such characters).
_LOCAL = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.!#$%&'*+/=?^_`{|}~-"
)
_HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_IPV4 = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
# After "IPv6:" (an address literal) or where no word, colon or dot goes before.
_IPV6 = re.compile(
    r"(?:(?<=[Ii][Pp][Vv]6:)|(?<![\w:.]))(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])"
)


def _local_char(c: str) -> bool:
    return c in _LOCAL or ord(c) > 0x7F


def _host_char(c: str) -> bool:
    return c in _HOST or ord(c) > 0x7F


class Redactor:
    """One output's placeholders. `domains` are the user's own: names in them are hidden
    too (other names, such as a provider's MX hosts, stay readable)."""

    def __init__(self, domains: Iterable[str] = ()) -> None:
        self._domains: list[str] = []
        self._seen: dict[tuple[str, str], str] = {}
        self._count: dict[str, int] = {}
        for d in domains:
            self.add_domain(d)

    def add_domain(self, domain: str | None) -> None:
        d = (domain or "").strip().rstrip(".").lower()
        if d and not d.startswith("[") and d not in self._domains:
            self._domains.append(d)

    def _placeholder(self, kind: str, value: str) -> str:
        key = (kind, value.lower())
        found = self._seen.get(key)
        if found is None:
            n = self._count[kind] = self._count.get(kind, 0) + 1
            found = {
                "user": f"user-{n}",
                "domain": f"domain-{n}.example",
                "host": f"host-{n}.example",
                "ipv4": f"192.0.2.{n}" if n < 255 else f"198.51.100.{n % 255}",
                "ipv6": f"2001:db8::{n:x}",
            }[kind]
            self._seen[key] = found
        return found

    def text(self, s: str) -> str:
        """`s` with every address, own host name and IP address replaced."""
        # IP addresses first: an address literal's IP is then already a placeholder.
        s = _IPV4.sub(self._ipv4, s)
        if ":" in s:
            s = _IPV6.sub(self._ipv6, s)
        if "@" in s:
            s = self._addresses(s)
        return self._hosts(s) if self._domains else s

    def json(self, obj: object) -> object:
        """`text` applied to every string inside a JSON-like value (keys are ours: kept)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, list):
            return [self.json(v) for v in obj]
        if isinstance(obj, dict):
            return {k: self.json(v) for k, v in obj.items()}
        return obj

    def _addresses(self, s: str) -> str:
        out: list[str] = []
        done = 0  # s[:done] is already in out
        at = s.find("@")
        while at >= 0:
            start = at
            while start > done and _local_char(s[start - 1]):
                start -= 1
            end = self._domain_end(s, at + 1)
            if start < at and end > at + 1:
                domain = s[at + 1 : end]
                out += [s[done:start], self._placeholder("user", s[start:end]), "@"]
                out.append(self._domain(domain))
                done = end
            at = s.find("@", max(at + 1, done))
        return "".join([*out, s[done:]])

    @staticmethod
    def _domain_end(s: str, i: int) -> int:
        if s.startswith("[", i):
            close = s.find("]", i, i + 64)
            return close + 1 if close > 0 else i
        end = i
        while end < len(s) and _host_char(s[end]):
            end += 1
        while end > i and s[end - 1] in ".-":  # a full stop ending a sentence
            end -= 1
        return end

    def _domain(self, domain: str) -> str:
        """The domain of an address: an own name is hidden (a literal's IP already is)."""
        return domain if domain.startswith("[") else self._hosts(domain)

    def _hosts(self, s: str) -> str:
        low = s.lower()
        for d in self._domains:
            if d not in low:
                continue
            s = self._host_names(s, d)
            low = s.lower()
        return s

    def _host_names(self, s: str, d: str) -> str:
        out: list[str] = []
        done, low = 0, s.lower()
        i = low.find(d)
        while i >= 0:
            end = i + len(d)
            right_ok = end == len(s) or not (_host_char(s[end]) and s[end] != ".")
            left_ok = i == 0 or s[i - 1] == "." or not _host_char(s[i - 1])
            if right_ok and left_ok and i >= done:
                start = i
                while start > done and _host_char(s[start - 1]):
                    start -= 1
                name = s[start:end]
                kind = "domain" if name.lower() == d else "host"
                out += [s[done:start], self._placeholder(kind, name)]
                done = end
            i = low.find(d, i + 1)
        return "".join([*out, s[done:]])

    def _ipv4(self, m: re.Match[str]) -> str:
        return self._placeholder("ipv4", m.group(0))

    def _ipv6(self, m: re.Match[str]) -> str:
        text = m.group(0)
        # An IPv6 address has seven colons or a "::"; checked first, the parse below (the
        # slow part) is left for what may be one: "10:20:30" in a log line is a time.
        if "::" not in text and text.count(":") != 7:
            return text
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return text
        return self._placeholder("ipv6", text)
