"""Read a bounce email (RFC 3464 delivery status notification or an MTA's plain-text bounce)
into one failure per recipient: its address, enhanced status and the remote reply.

The RFC 3464 structure decides first (`message/delivery-status`: Final-Recipient, Status,
Diagnostic-Code); the human-readable part fills what it lacks and is the only source for
MTAs that send no DSN. Pure and total: any bytes give a list, never an exception.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import re
from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise
from typing import TYPE_CHECKING, NamedTuple

from probe.interpret import interpret_reply
from probe.model import EnhancedCode, Form, Interpretation, Reply
from probe.pasted import parse_pasted

if TYPE_CHECKING:
    from email.message import Message

# Bounces put their news first; reading a megabyte is plenty and bounds the work.
MAX_EMAIL = 1024 * 1024
MAX_LINE = 2000
_MAX_PARTS = 64
_MAX_RECIPIENTS = 200
_ENH = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_ADDR = re.compile(
    r"(?<![A-Za-z0-9._%+=/!#$&'*?^`{|}~-])[A-Za-z0-9._%+=/!#$&'*?^`{|}~-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,8}"
)
# The sender named in a transcript or an Exim error is never the failed recipient.
_SENDER = re.compile(
    r"(?:MAIL FROM|envelope-from|Return-Path|From)[ \t]{0,5}:?[ \t]{0,5}<[^<>\n]{0,300}>", re.I
)
# qmail writes the status after its words: "Sorry, no mailbox here by that name. (#5.1.1)".
_STATUS_COMMENT = re.compile(r"[245]\.\d{1,3}\.\d{1,3}[ \t]{0,40}\(([^()]{1,500})\)")
_QMAIL_STATUS = re.compile(r"\(#([245])\.(\d{1,3})\.(\d{1,3})\)")
_REPLY_START = re.compile(r"[2-5]\d\d[ -]")
_FIELD = re.compile(r"(?<![A-Za-z0-9-])([A-Za-z][A-Za-z0-9-]{0,40})[ \t]{0,40}:[ \t]{0,40}(.*)")
# Where the copy of the original message starts inside a plain-text bounce.
_ORIGINAL = re.compile(
    r"(?:received|return-path|dkim-signature|x-original-to|delivered-to)[ \t]*:"
    r"|(?<!-)-{2,40} ?(?:this is a copy|below this line|original message|the header)"
    r"|(?:original message|unsent message|message headers) follows",
    re.IGNORECASE,
)
# Where the next message of an mbox file starts: "From MAILER-DAEMON  Thu Apr 29 ...".
_MBOX_FROM = re.compile(r"\n\n(?=From [^ \n]{1,300} {1,4}(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) )")
_SKIP_TYPES = frozenset({"message/rfc822", "text/rfc822-headers", "message/global-headers"})
# Fields a recipient's block has once: one seen again starts the next recipient's block.
_ONCE = frozenset({"final-recipient", "original-recipient", "action", "status"})
_DSN_TYPES = frozenset({"message/delivery-status", "message/global-delivery-status"})


# What codeless bounces say, and the RFC 3463 code that says the same; first match wins.
# Written in lower case and searched in a lower-cased line: a few times faster than
# re.IGNORECASE over the long lines of an HTML bounce.
_WORDS: tuple[tuple[re.Pattern[str], EnhancedCode], ...] = tuple(
    (re.compile(pattern), EnhancedCode(*code))
    for pattern, code in (
        (
            r"retry time ?out exceeded|message (?:has )?expired|delivery time expired"
            r"|too long (?:in|on) (?:the )?queue|could not be delivered within|giving up on"
            r"|(?:been|have been|has been) failing for a long time|retry timeout|has been delayed"
            r"|will be retried|delivery (?:is |was )?delayed|not yet been delivered"
            r"|was aborted after|giving up",
            (4, 4, 7),
        ),
        (
            r"reverse dns|ptr record|unverif[a-z]{0,6} sending ips?|mismatches client ip"
            r"|reverse (?:lookup|hostname)|no ptr",
            (5, 7, 25),
        ),
        (
            r"does not support tls|tls (?:is )?required|requires? (?:tls|encryption)"
            r"|starttls (?:is )?required",
            (5, 7, 10),
        ),
        (r"mailbox (?:is )?full|over (?:the )?quota|quota exceeded|mailbox is over", (5, 2, 2)),
        (
            r"name service error|host not found, try again|temporary dns|host ?name lookup fail",
            (4, 4, 3),
        ),
        (
            r"host unknown|unknown host|host not found|find any host named|domain (?:not found|does not exist|is not reachable)"
            r"|unrouteable|no such domain|bad destination system|no mx record"
            r"|indicated no smtp service",
            (5, 1, 2),
        ),
        (
            r"(?:mailbox|account) (?:is |has been )?(?:disabled|suspended|inactive|frozen|deactivated)",
            (5, 2, 1),
        ),
        (
            r"user ?unknown|unknown (?:user|recipient)|no such (?:user|mailbox|recipient|address)"
            r"|not recognized|does not exist|address (?:rejected|not found)|recipient not found"
            r"|no mailbox|invalid (?:recipient|address)|not a valid|(?:doesn't|does not) have an? "
            r"[^ \n]{1,100} account|(?:user|address|recipient|mailbox) (?:not exist|unknown)"
            r"|not listed in|no valid recipients|address (?:couldn't|could not) be found",
            (5, 1, 1),
        ),
        (r"malformed (?:recipient )?address|incorrectly constructed", (5, 1, 3)),
        (
            r"too (?:big|large)|size limit|exceeds? (?:the )?(?:maximum )?(?:message )?size",
            (5, 3, 4),
        ),
        (
            r"connection (?:refused|timed out|reset)|could not connect|network (?:is )?unreachable"
            r"|network error",
            (4, 4, 1),
        ),
        (
            r"permission to post|not allowed to (?:post|send)|not a member of|spam|denied|blocked|rejected|refused"
            r"|black ?listed|block ?listed|relay(?:ing)? (?:denied|not permitted)|unable to relay"
            r"|insecure mail relay|groups\.google\.com/support",
            (5, 7, 1),
        ),
        # Gmail's "Delivery to the following recipient failed permanently:", with no reason.
        (r"failed permanently", (5, 0, 0)),
    )
)


class Failure(NamedTuple):
    """One recipient of a bounce and what the remote side said about it."""

    recipient: str | None
    reply: Reply
    action: str | None
    source: str


def normalise(data: bytes) -> bytes:
    """CRLF, LF and CR-only line ends read alike; the size is capped."""
    return data[:MAX_EMAIL].replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def read_email(data: bytes) -> list[Failure]:
    """Every failed (or reported) recipient of a bounce, in the order the email names them.

    An mbox file (a "From " line first) may hold several bounces: each is read in turn.
    """
    out: list[Failure] = []
    for raw in _mbox_messages(normalise(data)):
        out.extend(_read_raw(raw))
        if len(out) >= _MAX_RECIPIENTS:
            break
    return out[:_MAX_RECIPIENTS]


def _mbox_messages(raw: bytes) -> list[bytes]:
    """The messages of an mbox file: a blank line, then a "From sender date" line, starts
    each one (mboxrd quotes a body's own "From " lines as ">From ")."""
    if not raw.startswith(b"From "):
        return [raw]
    # Latin-1 maps each byte to one character, so offsets in the text are offsets in `raw`.
    cuts = [m.end() for m in _MBOX_FROM.finditer(raw.decode("latin-1"))][: _MAX_PARTS - 1]
    bounds = [0, *cuts, len(raw)]
    return [raw[a:b] for a, b in pairwise(bounds)]


def _read_raw(raw: bytes) -> list[Failure]:
    # The email package pulls in socket; offline commands that read no email must not.
    import email
    import email.policy

    try:
        # compat32 parses no header into objects: several times cheaper on a big report.
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:
        return _read_message(None, raw.decode("utf-8", "replace"), 0)
    return _read_message(msg, raw.decode("utf-8", "replace"), 0)


def _read_message(msg: Message | None, fallback: str, depth: int) -> list[Failure]:
    """The failures of one parsed email; `fallback` is read as text where parsing failed."""
    named: list[str] = []
    returned: list[Message] = []
    try:
        if msg is None:
            raise ValueError("unparsed")
        dsn_texts, human, returned = _split_parts(msg)
        named = _ADDR.findall(str(msg.get("X-Failed-Recipients", ""))[:MAX_LINE])
    except Exception:
        dsn_texts, human = [], [fallback]
    records = [rec for text in dsn_texts for rec in dsn_records(text)]
    text = "\n".join(human)
    if not records:
        # A broken MIME boundary leaves the delivery-status fields inside the text part.
        records = [rec for rec in dsn_records(text) if "final-recipient:" in rec.source.lower()]
    out = _with_header(named, _merge(records, human_failures(text)), text, bool(records))
    if not out and depth < 2:
        out = _returned_bounce(returned, depth)
    return out


def _returned_bounce(returned: list[Message], depth: int) -> list[Failure]:
    """A notice that names no reason but returns a bounce (a relay or a filter passing one
    on): that bounce's failures. Only replies and written statuses count there, not words,
    so a returned ordinary message that merely mentions "spam" is not read as a failure."""
    for inner in returned:
        found = [
            f
            for f in _read_message(inner, "", depth + 1)
            if f.reply.form is not Form.BOUNCE_TEXT and f.reply.reply_class >= 4
        ]
        if found:
            return found
    return []


def _with_header(named: list[str], found: list[Failure], text: str, dsn: bool) -> list[Failure]:
    """Recipients an X-Failed-Recipients header (Exim, Gmail) names that nothing else gave.

    Exim writes the header only for permanent failures, so without telling words the
    status is an unspecified permanent one, marked as inferred like any word-read status.
    """
    names = list(dict.fromkeys(named[:_MAX_RECIPIENTS]))
    seen = {f.recipient.lower() for f in found if f.recipient}
    if found and not dsn and not seen & {a.lower() for a in names}:
        # The words were tied to another address the text named (a greeting to the sender).
        first = found[0]
        return [Failure(a, first.reply, "failed", first.source) for a in names] or found
    out = list(found)
    for addr in names:
        if addr.lower() in seen or (found and not seen):
            continue
        line = next((ln for ln in logical_lines(text) if _from_words(ln)), "")
        reply = _from_words(line) or Reply(None, EnhancedCode(5, 0, 0), "", (), Form.BOUNCE_TEXT)
        out.append(Failure(addr, reply, "failed", line or f"X-Failed-Recipients: {addr}"))
    return out


def _split_parts(msg: Message) -> tuple[list[str], list[str], list[Message]]:
    """The delivery-status texts, the human-readable texts and the returned messages."""
    from email.message import Message

    dsn: list[str] = []
    human: list[str] = []
    returned: list[Message] = []
    for part, ctype in _leaf_parts(msg, 0):
        if ctype in _DSN_TYPES:
            dsn.append(_dsn_body(part))
        elif ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list):
                returned.extend(m for m in payload[:1] if isinstance(m, Message))
        elif ctype.startswith("multipart/"):
            # Its boundary never came (a mistyped one): the whole body is the report, as text.
            body = part.get_payload()
            human.append(body[:MAX_EMAIL] if isinstance(body, str) else "")
        elif ctype.startswith("text/") and ctype not in _SKIP_TYPES:
            text = _text_of(part)
            human.append(_strip_html(text) if ctype == "text/html" and not human else text)
    return dsn, human, returned


def _leaf_parts(part: Message, depth: int) -> Iterator[tuple[Message, str]]:
    """Parts that carry content, and returned messages (message/rfc822) without their parts,
    each with its content type (parsed once: the email package parses it on every call)."""
    from email.message import Message

    if depth > 8:
        return
    ctype = part.get_content_type()
    if part.is_multipart() and ctype not in _SKIP_TYPES and ctype not in _DSN_TYPES:
        payload = part.get_payload()
        subparts = payload if isinstance(payload, list) else []
        for sub in subparts[:_MAX_PARTS]:
            if isinstance(sub, Message):
                yield from _leaf_parts(sub, depth + 1)
    elif ctype not in _SKIP_TYPES or ctype == "message/rfc822":
        yield part, ctype


def _dsn_body(part: Message) -> str:
    """The raw fields of a delivery-status part, decoded from base64 or quoted-printable."""
    import email.policy

    text = part.as_string(policy=email.policy.compat32.clone(linesep="\n"))
    body = text.split("\n\n", 1)[1] if "\n\n" in text else ""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if cte == "base64":
        try:
            return base64.b64decode(body, validate=False).decode("utf-8", "replace")
        except (binascii.Error, ValueError):
            return body
    if cte == "quoted-printable":
        return quopri.decodestring(body.encode("utf-8", "replace")).decode("utf-8", "replace")
    return body


def _text_of(part: Message) -> str:
    """A text part decoded (transfer encoding and charset), leniently."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    charset = str(part.get_content_charset() or "utf-8")
    try:
        return payload.decode(charset, "replace")
    except (LookupError, ValueError):
        return payload.decode("utf-8", "replace")


def _strip_html(text: str) -> str:
    out = re.sub(
        r"<(?:br|/p|/div|/tr|p|div)\b[^<>]{0,200}>", "\n", _unstyled(text[:MAX_EMAIL]), flags=re.I
    )
    return (
        re.sub(r"<[^<>]{0,500}>", " ", out)
        .replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )


def _unstyled(html: str) -> str:
    """HTML without its <style> and <script> blocks: style sheets are never a reason, and
    reading their hundreds of lines as words cost more than the rest of a big notice."""
    low = html.lower()
    if len(low) != len(html):
        return html  # a few letters lower-case to two characters: offsets would not match
    kept: list[str] = []
    at = 0
    while (start := min(_find(low, "<style", at), _find(low, "<script", at))) < len(html):
        name = "</style" if low.startswith("<style", start) else "</script"
        end = low.find(">", _find(low, name, start))
        kept.append(html[at:start])
        at = len(html) if end < 0 else end + 1
    kept.append(html[at:])
    return "".join(kept)


def _find(text: str, needle: str, start: int) -> int:
    """Where needle is in text from start, or the text's length."""
    i = text.find(needle, start)
    return len(text) if i < 0 else i


# ---------------------------------------------------------------- RFC 3464 delivery-status


class DsnRecord(NamedTuple):
    """The per-recipient fields of a delivery-status part."""

    recipient: str | None
    action: str | None
    status: EnhancedCode | None
    diagnostic: str
    source: str


def dsn_fields(text: str) -> Iterator[list[tuple[str, str]]]:
    """Blocks of (lower-case name, value) fields, folded lines unfolded (RFC 5322 §2.2.3)."""
    block: list[tuple[str, str]] = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            if block:
                yield block
            block = []
        elif line[0] in " \t" and block:
            name, value = block[-1]
            block[-1] = (name, f"{value} {line.strip()}"[: MAX_LINE * 4])
        else:
            m = _FIELD.match(line[:MAX_LINE])
            if m:
                name = m.group(1).lower()
                if name in _ONCE and any(k == name for k, _ in block):
                    # Some MTAs leave out the blank line between two recipients' blocks.
                    yield block
                    block = []
                block.append((name, m.group(2).strip()))
    if block:
        yield block


def _typed(value: str) -> str:
    """The value of a typed field ("rfc822; a@b", "smtp; 550 ...") without its type."""
    head, sep, rest = value.partition(";")
    return rest.strip() if sep and len(head) < 20 and " " not in head.strip() else value.strip()


def dsn_records(text: str) -> list[DsnRecord]:
    """The per-recipient blocks of a delivery-status text."""
    out: list[DsnRecord] = []
    for block in dsn_fields(text):
        f = dict(block)
        recipient = f.get("final-recipient") or f.get("original-recipient")
        if recipient is None and "status" not in f:
            continue  # the per-message block
        diag = " ".join(_typed(v) for k, v in block if k == "diagnostic-code")
        if not diag:
            # A comment in the Status field is the only reason some MTAs give (RFC 3464 §2.3.4).
            m = _STATUS_COMMENT.match(f.get("status", "")[:MAX_LINE].strip())
            diag = m.group(1).strip() if m else ""
        addr = _ADDR.search(_typed(recipient)) if recipient else None
        m = _ENH.search(f.get("status", "")[:100])
        status = EnhancedCode(*(int(x) for x in m.groups())) if m else None
        src = "\n".join(f"{k}: {v}" for k, v in block)
        action = f.get("action", "").lower().split()[0] if f.get("action", "").split() else None
        out.append(DsnRecord(addr.group(0) if addr else None, action, status, diag, src))
    return out


def _record_reply(rec: DsnRecord) -> Reply | None:
    """The reply a DSN record carries: its Diagnostic-Code, completed by its Status."""
    r = parse_pasted(rec.diagnostic) if rec.diagnostic else None
    if r is None and rec.status is None:
        return None
    if r is None:
        assert rec.status is not None
        return Reply(
            None, rec.status, rec.diagnostic, (rec.diagnostic,) if rec.diagnostic else (), Form.DSN
        )
    status = rec.status
    # A generic x.0.0 Status says less than the code the remote server itself gave.
    if r.enhanced is None or (
        status is not None and status.subject != 0 and r.enhanced.subject == 0
    ):
        r = replace(r, enhanced=status)
    if r.code is None and r.enhanced is None:
        return None
    return r


# ---------------------------------------------------------------- the human-readable part


def logical_lines(text: str) -> Iterator[str]:
    """Lines of a human part, with more deeply indented lines joined onto the one above."""
    current = ""
    indent = -1
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = line[:MAX_LINE].rstrip()
        stripped = line.lstrip()
        if _ORIGINAL.match(stripped):
            break
        depth = len(line) - len(stripped)
        # A reply that starts a line runs on to the paragraph's end, unless a new one starts.
        in_reply = _REPLY_START.match(current) and not _REPLY_START.match(stripped)
        if stripped and current and (in_reply or (depth > indent >= 0 and depth > 0)):
            current = f"{current} {stripped}"[: MAX_LINE * 2]
            continue
        if current:
            yield current
        current, indent = stripped, depth
    if current:
        yield current


def human_failures(text: str) -> list[Failure]:
    """Replies found in the human part, each tied to the last recipient address named."""
    found: dict[str | None, Failure] = {}
    recipient: str | None = None
    pending: Failure | None = None
    for line in logical_lines(text):
        addrs = _ADDR.findall(_SENDER.sub(" ", line))
        r = parse_pasted(line)
        if r is not None and r.code is None and r.form is not Form.DSN:
            r = None
        if addrs:
            recipient = addrs[0]
        if r is None:
            r = _qmail_status(line)
        if r is None:
            r = _from_words(line)
            if r is not None and recipient is None:
                # "Delivery to the following recipient has been delayed:" names it below.
                pending = pending or Failure(None, r, None, line)
                continue
        if r is None and pending is not None and recipient is not None:
            r, line, pending = pending.reply, pending.source, None
        if r is None:
            continue
        key = recipient
        old = found.get(key)
        if old is None or _rank(r) > _rank(old.reply):
            found[key] = Failure(recipient, r, None, line)
    failures = [f for f in found.values() if f.reply.reply_class >= 4]
    # A session transcript's greeting and "250 Ok" lines are context, not a failure.
    return failures or list(found.values())


def _qmail_status(line: str) -> Reply | None:
    """qmail's "(#5.1.1)" after its sentence: a written status without a reply code."""
    m = _QMAIL_STATUS.search(line[:MAX_LINE])
    if m is None:
        return None
    return Reply(None, EnhancedCode(*(int(x) for x in m.groups())), line, (line,), Form.DSN)


def _from_words(line: str) -> Reply | None:
    """A bounce's words without a code, read as the code they describe."""
    low = line[:MAX_LINE].lower()
    for pattern, code in _WORDS:
        if pattern.search(low):
            return Reply(None, code, line, (line,), Form.BOUNCE_TEXT)
    return None


def _rank(r: Reply) -> int:
    """How much a reply says: a code beats a bare status, a status beats inferred words.

    A refusal beats any success: a transcript's "250 Ok" lines are not why mail bounced.
    """
    failed = 4 if r.reply_class >= 4 else 0
    if r.form is Form.BOUNCE_TEXT:
        return failed
    return failed + (2 if r.code is not None else 1) + (r.enhanced is not None)


def _merge(records: list[DsnRecord], human: list[Failure]) -> list[Failure]:
    """DSN records first; the human part completes them or stands alone without them."""
    by_rcpt = {f.recipient.lower(): f for f in human if f.recipient}
    out: list[Failure] = []
    for rec in records:
        r = _record_reply(rec)
        h = by_rcpt.get(rec.recipient.lower()) if rec.recipient else None
        if h is None and len(human) == 1 and len(records) == 1:
            h = human[0]
        if h is not None and (r is None or (r.code is None and h.reply.code is not None)):
            r = h.reply if r is None or r.enhanced is None else _completed(h.reply, r.enhanced)
        elif h is not None and r is not None and r.code is None and not rec.diagnostic:
            # A bare Status: the human part's sentence about the recipient is the reason.
            r = replace(r, text=h.reply.text, lines=h.reply.lines)
        if r is not None:
            out.append(Failure(rec.recipient, r, rec.action, rec.source))
    if out:
        return out
    return human


def _completed(human: Reply, status: EnhancedCode) -> Reply:
    """The human part's reply with the DSN's Status where the reply's own says less (x.0.0)."""
    own = human.enhanced
    if own is not None and (own.subject != 0 or status.subject == 0):
        return human
    return replace(human, enhanced=status)


def explain_email(data: bytes) -> list[Interpretation]:
    """One interpretation per recipient of a bounce email, the recipient named in each."""
    return [
        interpret_reply(f.reply, f.source)._replace(recipient=f.recipient) for f in read_email(data)
    ]
