"""Pure: the configuration of `smtp-probe serve`: typed modules, server limits and the target
policy, parsed from TOML text and checked, with the line of the first mistake.

A module says how to probe (what `probe`'s options say); the target policy says what may be
probed at all, so an exporter cannot be used to scan the network it sits in.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from probe.config import ProbeRequest, QuitAfter, SessionOptions, StartTls, Timeouts
from probe.messages import carried, msg
from probe.result import Target
from probe.target import (
    TargetError,
    check_address,
    check_helo,
    is_ip,
    parse_port,
    parse_target,
    to_ascii_domain,
)
from probe.text import normalize_lang
from probe.verdict import Expectation, parse_expectation

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_LISTEN = "127.0.0.1:9125"
# An exporter answers within a scrape: one value for every wait, a budget of a few of them.
DEFAULT_TIMEOUT = 5.0


class ConfigError(ValueError):
    """A mistake in the configuration file: `line` is where it is (0 when unknown)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(msg("config.at_line", line=line, reason=reason) if line else reason)
        self.line = line
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Module:
    """How to probe a target: the same choices as `probe`'s options, typed."""

    name: str = "default"
    helo: str | None = None
    mail_from: str = ""
    rcpt: tuple[str, ...] = ()
    quit_after: QuitAfter | None = None
    starttls: StartTls = StartTls.AUTO
    implicit_tls: bool = False
    tls_verify: str = "pkix"  # pkix: an untrusted certificate fails the probe; none: noted only
    cafile: str | None = None
    family: int | None = None  # 4 or 6; None for both
    all_mx: bool = False  # every MX address, as `probe --all`; else the first that works
    one_address: bool = False  # with all_mx: one working address per MX host, not each one
    port: int | None = None
    timeouts: Timeouts = field(default_factory=lambda: Timeouts(DEFAULT_TIMEOUT))
    expect: tuple[Expectation, ...] = ()
    lang: str = "en"
    min_interval: float | None = None  # seconds; None: the server's

    def request(self, target: Target, nameservers: tuple[tuple[str, int], ...]) -> ProbeRequest:
        opts = SessionOptions(
            helo=self.helo,
            mail_from=self.mail_from,
            rcpts=self.rcpt,
            starttls=self.starttls,
            implicit_tls=self.implicit_tls,
            cafile=self.cafile,
            quit_after=self.quit_after,
            timeouts=self.timeouts,
        )
        return ProbeRequest(
            target=target,
            session=opts,
            port=self.port,
            all_hosts=self.all_mx,
            one_address=self.one_address,
            family=self.family,
            nameservers=nameservers,
            expectations=self.expect,
        )


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """What may be probed. Names must end in one of `domains` (when any are given); every
    address must lie in `networks` (when any are given); and an address that is not global
    (loopback, private, link-local, ...) is refused unless it lies in `private`."""

    domains: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    private: tuple[Network, ...] = ()

    def name_refused(self, name: str) -> str | None:
        """Why the target name may not be probed, or None."""
        if not self.domains or is_ip(name):
            return None
        low = name.lower().rstrip(".")
        if any(low == d or low.endswith("." + d) for d in self.domains):
            return None
        return msg("config.outside_domains", name=name)

    def address_refused(self, address: str) -> str | None:
        """Why a connection to this address is refused, or None."""
        ip = ipaddress.ip_address(address)
        if self.networks and not any(ip in n for n in self.networks):
            return msg("config.outside_networks", address=address)
        if not ip.is_global and not any(ip in n for n in self.private):
            return msg("config.private", address=address)
        return None


@dataclass(frozen=True, slots=True)
class ServeConfig:
    listen: str = DEFAULT_LISTEN
    min_interval: float = 60.0  # a target and module is probed at most once in this time
    queue: int = 100  # probes running or waiting at once; more are answered 503
    concurrency: int = 20  # sessions at once, overall
    per_host: int = 2  # sessions at once to one MX address
    history: int = 100  # recent probes on the status page
    cache_size: int = 10_000  # results kept (target and module)
    nameservers: tuple[tuple[str, int], ...] = ()
    targets: TargetPolicy = field(default_factory=TargetPolicy)
    modules: Mapping[str, Module] = field(default_factory=lambda: {"default": Module()})

    def interval(self, module: Module) -> float:
        return self.min_interval if module.min_interval is None else module.min_interval


# -- parsing -----------------------------------------------------------------------------------

_TOP = {"server", "targets", "modules"}
_MODULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TIMEOUT_KEYS: tuple[str, ...] = (
    "timeout",
    "connect_timeout",
    "greeting_timeout",
    "command_timeout",
    "dns_timeout",
    "budget",
)


def line_of(text: str, table: str, key: str | None = None) -> int:
    """The line where `[table]` (or `key` inside it) is written; 0 when not found."""
    current, header_line = "", 0
    header = re.compile(r"\s*\[\s*([^\]]+?)\s*\]\s*(#.*)?$")
    for n, line in enumerate(text.splitlines(), 1):
        m = header.match(line)
        if m:
            current = re.sub(r"\s*\.\s*", ".", m.group(1)).replace('"', "").replace("'", "")
            if current == table and key is None:
                return n
            header_line = n if current == table else header_line
            continue
        if key is not None and current == table and re.match(rf"\s*{re.escape(key)}\s*=", line):
            return n
    return header_line


def _number(value: object, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(msg("config.number", key=what))
    if not low <= value <= high:
        raise ValueError(msg("config.between", key=what, low=low, high=high))
    return float(value)


def _string(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(msg("config.string", key=what))
    return value


def _strings(value: object, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(msg("config.strings", key=what))
    return tuple(value)


def _choice(value: object, choices: tuple[str, ...], what: str) -> str:
    word = _string(value, what)
    if word not in choices:
        raise ValueError(msg("config.choice", key=what, choices=", ".join(choices)))
    return word


def _family(value: object) -> int | None:
    words = set(_strings(value, "ip_families"))
    if not words or not words <= {"ip4", "ip6"}:
        raise ValueError(msg("config.families"))
    return None if len(words) == 2 else (4 if "ip4" in words else 6)


def _lang(value: object) -> str:
    lang = normalize_lang(_string(value, "lang"))
    if lang is None:
        raise ValueError(msg("config.lang"))
    return lang


_MODULE_FIELDS: dict[str, tuple[str, Callable[[Any], object]]] = {
    "helo": ("helo", lambda v: check_helo(_string(v, "helo"))),
    "mail_from": ("mail_from", lambda v: check_address(_string(v, "mail_from"), "mail_from")),
    "rcpt": ("rcpt", lambda v: tuple(check_address(r, "rcpt") for r in _strings(v, "rcpt"))),
    "quit_after": ("quit_after", lambda v: QuitAfter(_choice(v, tuple(QuitAfter), "quit_after"))),
    "starttls": ("starttls", lambda v: StartTls(_choice(v, tuple(StartTls), "starttls"))),
    "tls": ("implicit_tls", lambda v: _choice(v, ("starttls", "implicit"), "tls") == "implicit"),
    "tls_verify": ("tls_verify", lambda v: _choice(v, ("pkix", "none"), "tls_verify")),
    "cafile": ("cafile", lambda v: _string(v, "cafile")),
    "ip_families": ("family", _family),
    "mx": ("all_mx", lambda v: _choice(v, ("first", "all"), "mx") == "all"),
    "addresses": ("one_address", lambda v: _choice(v, ("all", "one"), "addresses") == "one"),
    "port": ("port", lambda v: int(_number(v, 1, 65535, "port"))),
    "expect": ("expect", lambda v: tuple(parse_expectation(e) for e in _strings(v, "expect"))),
    "lang": ("lang", _lang),
    "min_interval": ("min_interval", lambda v: _number(v, 0, 86400, "min_interval")),
}


def _timeouts(raw: Mapping[str, object]) -> Timeouts:
    got = {k: _number(raw[k], 0.1, 3600, k) for k in _TIMEOUT_KEYS if k in raw}
    return Timeouts(
        got.get("timeout", DEFAULT_TIMEOUT),
        connect=got.get("connect_timeout"),
        greeting=got.get("greeting_timeout"),
        command=got.get("command_timeout"),
        dns=got.get("dns_timeout"),
        budget=got.get("budget"),
    )


def parse_module(name: str, raw: Mapping[str, object], text: str = "") -> Module:
    table = f"modules.{name}"
    if not _MODULE_NAME.fullmatch(name):
        raise ConfigError(line_of(text, table), msg("config.module_name", name=repr(name)))
    values: dict[str, object] = {"name": name}
    for key, value in raw.items():
        try:
            if key in _MODULE_FIELDS:
                attr, convert = _MODULE_FIELDS[key]
                values[attr] = convert(value)
            elif key not in _TIMEOUT_KEYS:
                raise ValueError(msg("config.unknown_key", key=repr(key), table=table))
        except (ValueError, TargetError) as e:
            reason = carried(e)
            if not reason.startswith((key, "unknown key")):
                reason = msg("config.key", key=key, reason=reason)
            raise ConfigError(line_of(text, table, key), reason) from None
    try:
        values["timeouts"] = _timeouts(raw)
    except ValueError as e:
        bad = next((k for k in _TIMEOUT_KEYS if k in raw and k in str(e)), None)
        raise ConfigError(line_of(text, table, bad), carried(e)) from None
    return Module(**values)  # type: ignore[arg-type]


def parse_nameserver(value: str) -> tuple[str, int]:
    """HOST, HOST:PORT or [V6]:PORT, HOST an IP address."""
    host, _, port = value.rpartition(":") if value.count(":") == 1 else (value, "", "53")
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else "53"
    try:
        number = parse_port(port)
    except TargetError:
        number = 0
    if not is_ip(host) or not number:
        raise ValueError(msg("config.nameserver", value=repr(value)))
    return host, number


def _networks(value: object, what: str) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(v, strict=False) for v in _strings(value, what))
    except ValueError as e:
        raise ValueError(msg("config.key", key=what, reason=str(e))) from None


def _domain_suffix(value: str) -> str:
    return to_ascii_domain(value.strip().lstrip(".")).lower()


def _targets(raw: Mapping[str, object], text: str) -> TargetPolicy:
    fields_: dict[str, Callable[[Any], object]] = {
        "domains": lambda v: tuple(_domain_suffix(d) for d in _strings(v, "domains")),
        "networks": lambda v: _networks(v, "networks"),
        "private": lambda v: _networks(v, "private"),
    }
    values: dict[str, object] = {}
    for key, value in raw.items():
        try:
            if key not in fields_:
                raise ValueError(msg("config.unknown_key", key=repr(key), table="targets"))
            values[key] = fields_[key](value)
        except (ValueError, TargetError) as e:
            raise ConfigError(line_of(text, "targets", key), carried(e)) from None
    return TargetPolicy(**values)  # type: ignore[arg-type]


_SERVER_FIELDS: dict[str, Callable[[Any], object]] = {
    "listen": lambda v: _string(v, "listen"),
    "min_interval": lambda v: _number(v, 0, 86400, "min_interval"),
    "queue": lambda v: int(_number(v, 1, 100_000, "queue")),
    "concurrency": lambda v: int(_number(v, 1, 10_000, "concurrency")),
    "per_host": lambda v: int(_number(v, 1, 1000, "per_host")),
    "history": lambda v: int(_number(v, 0, 10_000, "history")),
    "cache_size": lambda v: int(_number(v, 1, 10_000_000, "cache_size")),
    "nameservers": lambda v: tuple(parse_nameserver(n) for n in _strings(v, "nameservers")),
}


def _server(raw: Mapping[str, object], text: str) -> dict[str, object]:
    values: dict[str, object] = {}
    for key, value in raw.items():
        try:
            if key not in _SERVER_FIELDS:
                raise ValueError(msg("config.unknown_key", key=repr(key), table="server"))
            values[key] = _SERVER_FIELDS[key](value)
        except ValueError as e:
            raise ConfigError(line_of(text, "server", key), carried(e)) from None
    return values


def _table(doc: Mapping[str, object], key: str, text: str) -> Mapping[str, object]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(line_of(text, key), msg("config.table", key=key))
    return value


def parse_config(text: str) -> ServeConfig:
    """The configuration in `text` (TOML); ConfigError names the line and the reason."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        reason = str(e).split(" (at line")[0]
        raise ConfigError(int(m.group(1)) if m else 0, reason) from None
    unknown = sorted(set(doc) - _TOP)
    if unknown:
        raise ConfigError(line_of(text, unknown[0]), msg("config.unknown", key=repr(unknown[0])))
    values = _server(_table(doc, "server", text), text)
    values["targets"] = _targets(_table(doc, "targets", text), text)
    modules = {"default": Module()}
    for name, raw in _table(doc, "modules", text).items():
        if not isinstance(raw, dict):
            raise ConfigError(line_of(text, "modules"), msg("config.module_table", name=repr(name)))
        modules[name] = parse_module(name, raw, text)
    values["modules"] = modules
    return ServeConfig(**values)  # type: ignore[arg-type]


# -- queries -----------------------------------------------------------------------------------

MAX_TARGET = 255  # characters: a domain name is at most 253, a port adds 6


class BadQuery(ValueError):
    """A query the exporter will not run: the message is one line for the HTTP answer."""


def query(config: ServeConfig, params: Mapping[str, str]) -> tuple[Target, Module]:
    """The target and module a `/probe` query asks for; BadQuery says why not."""
    raw = params.get("target", "")
    name = params.get("module", "default")
    if not raw:
        raise BadQuery(msg("http.missing_target"))
    if len(raw) > MAX_TARGET:
        raise BadQuery(msg("http.target_too_long", most=MAX_TARGET))
    if len(name) > 64 or name not in config.modules:
        raise BadQuery(msg("http.unknown_module", name=repr(name[:64])))
    try:
        target = parse_target(raw)
    except TargetError as e:
        raise BadQuery(carried(e)) from None
    if target.kind == "address":
        raise BadQuery(msg("http.no_address"))
    return target, config.modules[name]


def refused(policy: TargetPolicy, target: Target) -> str | None:
    """Why the target itself may not be probed (its name, or its address when it is one)."""
    name = target.domain or target.host or ""
    why = policy.name_refused(name)
    if why is None and target.kind == "literal" and target.host:
        why = policy.address_refused(target.host)
    return why


def cache_key(target: Target, module: Module) -> tuple[str, str]:
    return f"{target.kind}:{target.domain or target.host}:{target.port or ''}", module.name
