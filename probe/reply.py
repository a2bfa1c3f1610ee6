"""Find SMTP replies in text: bare codes, reply lines, bounces, MTA log lines, DSNs, swaks.

Everything here is pure and total: any string gives a `Reply` or `None`, never an exception.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

from probe.model import EnhancedCode, Form, NotAReply, Reply

MAX_ITEM = 16 * 1024
_ENH = r"[245]\.\d{1,3}\.\d{1,3}"
_BARE_CODE = re.compile(r"\s*(\d{1,3})\s*")
_BARE_ENH = re.compile(rf"\s*({_ENH})\s*")
# A reply line: three digits, then "-", a space, or the end (RFC 5321 §4.2).
_LINE = re.compile(r"(\d{3})(?:([ -])(.*))?", re.DOTALL)
_LEAD_ENH = re.compile(rf"({_ENH})(?=\s|$|[,;:.)\]])\s*")
# qmail and others append the enhanced code at the end: "(#5.1.1)" or "(#5.1.1 - chkuser)".
_TRAIL_ENH = re.compile(rf"\(#({_ENH})\b[^)]*\)")
_SWAKS = re.compile(r"\s*<(?:\*\*|~\*\*|~|-)\s*(.*)", re.DOTALL)
_SWAKS_CMD = re.compile(r"\s*(?:->|~>)\s*(.*)", re.DOTALL)
_SWAKS_CONNECT = re.compile(r"\s*===\s*Connected to", re.IGNORECASE)
_POSTFIX_SAID = re.compile(
    r"\bsaid:\s*(.*?)(?:\s*\(in reply to (.+?)(?: command)?\))?\s*$", re.IGNORECASE | re.DOTALL
)
_POSTFIX_REFUSED = re.compile(r"\brefused to talk to me:\s*(.*)$", re.IGNORECASE | re.DOTALL)
_POSTFIX_REJECT = re.compile(
    r"\b(?:NOQUEUE|[0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}):\s*"
    r"(?:reject|defer|discard|hold|filter|redirect|reject_warning)\w*:\s*"
    r"([A-Z-]+)\s+from\s+\S+?:\s*(.*?)(?:;\s*from=<.*)?$",
    re.DOTALL,
)
_EXIM = re.compile(
    r"SMTP error from remote (?:mail server|mailer) after\s+(.+?):\s*(?:host\s+\S+\s+\[[^\]]*\]:\s*)?"
    r"(\d{3}.*)$",
    re.IGNORECASE | re.DOTALL,
)
_DIAG = re.compile(r"\bDiagnostic-Code:\s*[\w-]+\s*;\s*(.*)$", re.IGNORECASE | re.DOTALL)
_STATUS = re.compile(rf"\b(?:Status:\s*|dsn=)({_ENH})\b", re.IGNORECASE)
# Anywhere in a line: a basic code followed by an enhanced code is a strong enough signal.
_CODE_ENH = re.compile(rf"(?<![\w.:/-])([2-5]\d\d)[ -]({_ENH})(?=\s|$|[,;:.)\]])")
_REPLY_AFTER = re.compile(r"(?:^|[:;]\s+|\breply[=:]\s*|\bstat=\w+:\s*)([2-5]\d\d)([ -]).+", re.I)

_COMMANDS = (
    ("RCPT", ("RCPT",)),
    ("MAIL", ("MAIL",)),
    ("DOT", ("END OF DATA", "END-OF-DATA", "END-OF-MESSAGE", "END OF MESSAGE", ".")),
    ("DATA", ("DATA",)),
    ("EHLO", ("EHLO",)),
    ("HELO", ("HELO",)),
    ("STARTTLS", ("STARTTLS",)),
    ("AUTH", ("AUTH",)),
    ("BDAT", ("BDAT",)),
    ("RSET", ("RSET",)),
    ("QUIT", ("QUIT",)),
    ("VRFY", ("VRFY",)),
    ("EXPN", ("EXPN",)),
    ("NOOP", ("NOOP",)),
    ("ETRN", ("ETRN",)),
    ("CONNECT", ("CONNECT", "INITIAL CONNECTION", "GREETING", "INITIAL PROTOCOL GREETING")),
)


def command_name(words: str) -> str | None:
    """Map how logs name a command ("RCPT TO:<x>", "end of data", "CONNECT") to our vocabulary."""
    w = words.strip().upper()
    w = w.removeprefix("PIPELINED ").removeprefix("SENDING ")
    for name, starts in _COMMANDS:
        for start in starts:
            if w == start or w.startswith((start + " ", start + ":")):
                return name
    if w.startswith("END OF") or w.endswith("DATA COMMAND"):
        return "DOT"
    return None


def _enhanced(s: str) -> EnhancedCode:
    parts = s.split(".")
    return EnhancedCode(int(parts[0]), int(parts[1]), int(parts[2]))


def _strip_lead_enhanced(text: str) -> tuple[EnhancedCode | None, str]:
    m = _LEAD_ENH.match(text)
    if m:
        return _enhanced(m.group(1)), text[m.end() :]
    return None, text


def _unfold(code: int, text: str, enh: EnhancedCode | None) -> tuple[str, bool]:
    """Remove repeated "550-5.1.1 " continuation prefixes that bounces fold into one line."""
    enh_pat = rf"(?:{re.escape(str(enh))}\s+)?" if enh else ""
    pat = re.compile(
        rf"(?:^|\s)(?:{code}-{enh_pat}|{code} {re.escape(str(enh))}\s+)"
        if enh
        else rf"(?:^|\s){code}-"
    )
    out, n = pat.subn(" ", text)
    return " ".join(out.split()), n > 0


def _from_lines(lines: list[str], form: Form, command: str | None) -> Reply | None:
    """Build a reply from one or more physical reply lines ("250-a", "250 b")."""
    code: int | None = None
    enh: EnhancedCode | None = None
    texts: list[str] = []
    others: list[int] = []
    for line in lines:
        m = _LINE.fullmatch(line.strip())
        if not m:
            return None
        c = int(m.group(1))
        code = c if code is None else code
        if c != code and c not in others:
            others.append(c)
        rest = (m.group(3) or "").strip()
        e, rest = _strip_lead_enhanced(rest)
        if e is not None and enh is None:
            enh = e
        if rest:
            texts.append(rest)
    if code is None or not 200 <= code <= 599:
        return None
    text = " ".join(texts)
    if len(lines) == 1:
        text, folded = _unfold(code, text, enh)
        if folded and form is Form.REPLY:
            form = Form.FOLDED
    if enh is None:
        m = _TRAIL_ENH.search(text)
        if m:
            enh = _enhanced(m.group(1))
    return Reply(code, enh, " ".join(text.split()), tuple(lines), form, command, tuple(others))


def _reply_text(s: str, form: Form, command: str | None) -> Reply | None:
    """Parse text that should start with a reply (possibly several physical lines)."""
    lines = [ln for ln in s.replace("\r\n", "\n").replace("\r", "\n").split("\n") if ln.strip()]
    if not lines:
        return None
    if len(lines) > 1:
        r = _from_lines(lines, Form.MULTILINE if form is Form.REPLY else form, command)
        if r is not None:
            return r
        lines = [" ".join(ln.strip() for ln in lines)]
    return _from_lines(lines, form, command)


def reply_from_lines(lines: Iterable[str], command: str | None = None) -> Reply | None:
    """A reply from the physical lines of one server reply, as captured on the wire."""
    ls = [ln for ln in lines if ln.strip()]
    if not ls:
        return None
    return _from_lines(ls, Form.MULTILINE if len(ls) > 1 else Form.REPLY, command)


def parse(item: str) -> Reply | None:
    """Find the SMTP reply in one input item, or return None when it holds none."""
    # Replies are short (RFC 5321 §4.5.3.1.5: 512 octets a line); past this, matching stops.
    s = item[:MAX_ITEM].strip()
    if not s:
        return None
    m = _BARE_CODE.fullmatch(s)
    if m:
        code = int(m.group(1))
        if 200 <= code <= 599 and len(m.group(1)) == 3:
            return Reply(code, None, "", (), Form.CODE)
        return None
    m = _BARE_ENH.fullmatch(s)
    if m:
        return Reply(None, _enhanced(m.group(1)), "", (), Form.ENHANCED)
    if _LINE.match(s) and s[:3].isdigit() and (len(s) == 3 or s[3] in " -"):
        return _reply_text(s, Form.REPLY, None)
    return _embedded(s)


def _embedded(s: str) -> Reply | None:
    """The reply inside a swaks transcript, an MTA log line, a bounce or a DSN."""
    m = _SWAKS.match(s)
    if m:
        return _reply_text(m.group(1), Form.SWAKS, None)
    m = _EXIM.search(s)
    if m:
        return _reply_text(m.group(2), Form.EXIM, command_name(m.group(1)))
    found = _postfix(s) or _diagnostic(s)
    if found is not None:
        return found
    return _anywhere(s)


def _postfix(s: str) -> Reply | None:
    # These forms can match lines they do not fit; None lets the caller try the others.
    m = _POSTFIX_REFUSED.search(s)
    if m:
        r = _reply_text(m.group(1), Form.POSTFIX, "CONNECT")
        if r is not None:
            return r
    m = _POSTFIX_SAID.search(s)
    if m:
        cmd = command_name(m.group(2)) if m.group(2) else None
        r = _reply_text(m.group(1), Form.POSTFIX, cmd)
        if r is not None:
            return r
    m = _POSTFIX_REJECT.search(s)
    if m:
        return _reply_text(m.group(2), Form.POSTFIX, command_name(m.group(1)))
    return None


def _diagnostic(s: str) -> Reply | None:
    """A DSN's Diagnostic-Code: a whole reply, or at least its enhanced code."""
    m = _DIAG.search(s)
    if not m:
        return None
    r = _reply_text(m.group(1), Form.DSN, None)
    if r is not None:
        return r
    diag = m.group(1).strip()
    e = _LEAD_ENH.match(diag)
    return Reply(None, _enhanced(e.group(1)), diag, (), Form.DSN) if e else None


def _anywhere(s: str) -> Reply | None:
    """Weaker signs of a reply anywhere in the line, strongest first."""
    m = _CODE_ENH.search(s)
    if m:
        return _reply_text(s[m.start() :], Form.LOG, None)
    m = _REPLY_AFTER.search(s)
    if m:
        return _reply_text(s[m.start(1) :], Form.LOG, None)
    m = _STATUS.search(s)
    if m:
        return Reply(None, _enhanced(m.group(1)), "", (), Form.DSN)
    m = _TRAIL_ENH.search(s)
    if m:
        return Reply(None, _enhanced(m.group(1)), s, (), Form.LOG)
    return None


_CONT = re.compile(r"\s*(?:<(?:\*\*|~\*\*|~|-)\s*)?(\d{3})-")
_LAST = re.compile(r"\s*(?:<(?:\*\*|~\*\*|~|-)\s*)?(\d{3})(?: |$)")


def iter_replies(lines: Iterable[str]) -> Iterator[tuple[str, Reply | NotAReply]]:
    """Group a stream of lines into replies.

    Multi-line replies ("250-a" ... "250 b", also inside a swaks transcript) become one reply;
    a swaks "-> RCPT TO:<x>" line names the command for the reply that follows it.
    Yields (input, result) pairs lazily, so memory stays constant.
    """
    pending: list[str] = []
    pending_code = ""
    command: str | None = None

    def flush() -> Iterator[tuple[str, Reply | NotAReply]]:
        nonlocal pending, command
        raw = "\n".join(pending)
        swaks = any(_SWAKS.match(p) for p in pending)
        body = "\n".join(m.group(1) if (m := _SWAKS.match(p)) else p for p in pending)
        r = _reply_text(body, Form.SWAKS if swaks else Form.MULTILINE, command)
        command = None
        pending = []
        yield raw, (r if r is not None else NotAReply(raw))

    for raw_line in lines:
        line = raw_line.rstrip("\r\n")
        cont = _CONT.match(line)
        if cont and (not pending or cont.group(1) == pending_code):
            pending.append(line)
            pending_code = cont.group(1)
            continue
        if pending:
            last = _LAST.match(line)
            if last and last.group(1) == pending_code:
                pending.append(line)
                yield from flush()
                continue
            yield from flush()
        cmd = _SWAKS_CMD.match(line)
        if cmd:
            command = command_name(cmd.group(1))
            yield line, NotAReply(line)
            continue
        if _SWAKS_CONNECT.match(line):
            command = "CONNECT"
            yield line, NotAReply(line)
            continue
        r = parse(line)
        if r is not None and r.command is None and command is not None:
            r = replace(r, command=command)
        if r is not None:
            command = None
        yield line, (r if r is not None else NotAReply(line))
    if pending:
        yield from flush()
