"""Pure parsing and validation of what the user asks to probe and of values sent on the wire."""

from __future__ import annotations

import ipaddress
import re

from probe.messages import Param, msg
from probe.result import Target

# Matched against names already made ASCII and lower case, so without IGNORECASE: its Unicode
# case folding more than doubles the time the pattern takes to compile.
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
# An IPv4 address as ipaddress writes it (no leading zeros): taken as it is, without building
# an IPv4Address (a batch of literals asks for every target). Compiled when first used.
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_DOTTED = rf"{_OCTET}(?:\.{_OCTET}){{3}}"


def _dotted(text: str) -> bool:
    return re.fullmatch(_DOTTED, text) is not None


def is_ip(name: str) -> bool:
    """Whether a host name is an IP address ("192.0.2.1", "[2001:db8::1]", "192.0.2.1.")."""
    bare = name.strip("[]").rstrip(".")
    if _dotted(bare):
        return True
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        return False
    return True


class TargetError(ValueError):
    """The target or a wire value cannot be used; the message is one line for the user, a
    `probe.messages.Message` (`e.args[0]`) that the CLI says in the user's language."""

    def __init__(self, id: str, /, **params: Param) -> None:
        super().__init__(msg(id, **params))


# The values this module names in its own words (a message id), as opposed to an option
# name ("--rcpt") or a configuration key: made a message only when an error says them, not
# for every target checked.
_OUR_WORDS = ("target.the_target", "target.the_address")


def _named(what: str) -> Param:
    return msg(what) if what in _OUR_WORDS else what


def to_ascii_domain(name: str) -> str:
    """IDNA 2008 with UTS 46 mapping ("Bücher.example" -> "xn--bcher-kva.example")."""
    name = name.strip().rstrip(".")
    if not name:
        raise TargetError("target.empty_domain")
    if not name.isascii():
        import idna

        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as e:
            raise TargetError("target.bad_idn", name=repr(name), why=str(e)) from None
    name = name.lower()
    if len(name) > 253:
        raise TargetError("target.domain_too_long")
    for label in name.split("."):
        if not _LABEL.fullmatch(label):
            raise TargetError("target.bad_label", name=repr(name), label=repr(label))
    return name


def check_wire_value(value: str, what: str) -> str:
    """Refuse anything that could inject commands: CR, LF, NUL and other control characters."""
    if not (value.isascii() and value.isprintable()):  # printable ASCII holds none
        for ch in value:
            if ord(ch) < 0x20 or ord(ch) == 0x7F:
                raise TargetError("target.control", what=_named(what), char=repr(ch))
    if value != value.strip():
        raise TargetError("target.spaces_around", what=_named(what))
    if " " in value or "<" in value or ">" in value:
        raise TargetError("target.spaces_inside", what=_named(what))
    return value


def check_address(value: str, what: str) -> str:
    """A mailbox for MAIL FROM / RCPT TO: local@domain with an IDNA domain ("" and "<>" are
    the null sender; "<a@b>" is taken as written in a header). Address literals are given in
    the form RFC 5321 sends: "[IPv6:2001:db8::1]", even when written "[2001:db8::1]"."""
    if value.startswith("<") and value.endswith(">"):
        value = value[1:-1]
    check_wire_value(value, what)
    if value == "":
        return value
    local, domain = _split_address(value, what)
    if len(local) > 64:
        raise TargetError("target.local_too_long", what=_named(what))
    if domain.startswith("["):
        return f"{local}@{wire_literal(domain)}"
    return f"{local}@{to_ascii_domain(domain)}"


# RFC 5322 atext, plus anything non-ASCII (RFC 6531): what a local part holds unquoted.
# Written as what it is not: a range up to U+10FFFF takes 4 ms of start-up to compile.
_ATOM = re.compile(r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f]+')


def _split_address(value: str, what: str) -> tuple[str, str]:
    """(local part, domain), or a one-line reason why `value` is not an address."""
    quoted = value.startswith('"') and value.count('"') >= 2
    local, at, domain = value.rpartition("@")
    if not at:
        raise TargetError("target.not_an_address", what=_named(what), value=repr(value))
    if not local or not domain:
        part = "target.empty_local" if not local else "target.empty_domain_part"
        raise TargetError(part, what=_named(what), value=repr(value))
    if quoted and local.startswith('"') and local.endswith('"') and len(local) >= 2:
        return local, domain
    if "@" in local:
        raise TargetError("target.two_ats", what=_named(what), value=repr(value))
    if not all(_ATOM.fullmatch(atom) for atom in local.split(".")):
        raise TargetError(
            "target.bad_local", what=_named(what), value=repr(value), local=repr(local)
        )
    return local, domain


def wire_literal(text: str) -> str:
    """An address literal as RFC 5321 writes it: "[192.0.2.1]" or "[IPv6:2001:db8::1]"."""
    ip = parse_literal(text)
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def check_helo(value: str) -> str:
    check_wire_value(value, "--helo")
    if not value.isascii():
        raise TargetError("target.helo_ascii")
    if value.startswith("["):
        return wire_literal(value)
    return to_ascii_domain(value)


def parse_literal(text: str) -> str:
    """An address literal -> the IP address: "[192.0.2.1]", "[IPv6:2001:db8::1]", and
    "[2001:db8::1]" as admins write it (the URL form)."""
    inner = text.strip()[1:-1] if text.startswith("[") and text.endswith("]") else text
    tagged = inner.lower().startswith("ipv6:")
    if tagged or ":" in inner:
        try:
            return str(ipaddress.IPv6Address(inner[5:] if tagged else inner))
        except ValueError:
            raise TargetError("target.bad_ipv6", text=repr(text)) from None
    if _dotted(inner):
        return inner
    try:
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        raise TargetError("target.bad_literal", text=repr(text)) from None


def shown(text: str, most: int = 24) -> str:
    """A user's value quoted for an error line, cut short (a 5,000-digit port stays one line)."""
    if len(text) <= most:
        return repr(text)
    return f"{text[:most]!r}... ({len(text)} characters)"


def parse_int(text: str, low: int, high: int) -> int:
    """A whole number from `low` to `high`, written in ASCII digits and nothing else.

    int() is too lenient for what users type: it takes "+25", " 25", "2_5" and "٣" (an
    Arabic-Indic three), and raises ValueError, not a usage error, past 4,300 digits.
    """
    if not (text.isascii() and text.isdigit()):
        raise TargetError("target.not_whole", text=shown(text))
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(high)) or not low <= int(digits) <= high:
        raise TargetError("target.out_of_range", text=shown(text), low=low, high=high)
    return int(digits)


_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{0,12})?|\.[0-9]{1,12}")


def parse_decimal(text: str, low: float, high: float) -> float:
    """A plain decimal ("5", "0.5", ".5") from `low` to `high`; float() would also take
    "nan", "inf", "1e3", "1_0" and non-ASCII digits, and "nan" passes every range check."""
    if not (text.isascii() and _DECIMAL.fullmatch(text)):
        raise TargetError("target.not_decimal", text=shown(text))
    value = float(text)
    if not low <= value <= high:
        raise TargetError("target.out_of_range_g", text=shown(text), low=low, high=high)
    return value


def parse_port(text: str) -> int:
    """A TCP port, 1-65535, in ASCII digits."""
    try:
        return parse_int(text, 1, 65535)
    except TargetError:
        raise TargetError("target.not_a_port", text=shown(text)) from None


def parse_target(raw: str, *, host_mode: bool = False) -> Target:
    """Domain, address, host (with --host), address literal, or host:port."""
    text = raw.strip()
    if not text:
        raise TargetError("target.empty")
    check_wire_value(text, "target.the_target")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise TargetError("target.unclosed", raw=repr(raw))
        ip = parse_literal(text[: end + 1])
        rest = text[end + 1 :]
        port = parse_port(rest[1:]) if rest.startswith(":") else None
        if rest and port is None:
            raise TargetError("target.after_literal", raw=repr(raw))
        return Target(raw, "literal", None, ip, port, display=text)
    try:
        ip = str(ipaddress.ip_address(text))
        return Target(raw, "literal", None, ip, None, display=text)
    except ValueError:
        pass
    if "@" in text:
        address = check_address(text, "target.the_address")
        ascii_domain = address.rpartition("@")[2]
        if ascii_domain.startswith("["):
            # user@[192.0.2.1]: the mailbox is at that address; there is no name to look up.
            literal = parse_literal(ascii_domain)
            return Target(raw, "address", None, literal, None, (address,), display=text)
        return Target(raw, "address", ascii_domain, None, None, (address,), display=text)
    host, sep, port_text = text.rpartition(":")
    if sep:  # no domain holds a colon: what follows the last one must be a port
        port = parse_port(port_text)
        try:  # 192.0.2.1:2525 is that address, not a host name made of digits
            return Target(
                raw, "literal", None, str(ipaddress.IPv4Address(host)), port, display=text
            )
        except ValueError:
            return Target(raw, "host", None, to_ascii_domain(host), port, display=text)
    name = to_ascii_domain(text)
    if host_mode:
        return Target(raw, "host", None, name, None, display=text)
    return Target(raw, "domain", name, None, None, display=text)
