"""Replies inside the text admins paste: swaks transcripts, Sendmail transcripts and `stat=`
lines, Exim log lines, and the sentences Microsoft 365 and Gmail wrap a reply in.

The forms `probe.reply.parse` already reads go to it; this module first unwraps what it does
not. Every pattern is anchored or has bounded repeats, and input is capped before matching, so
matching is linear in the input.
"""

from __future__ import annotations

import re
from dataclasses import replace

from probe.model import EnhancedCode, Form, Reply
from probe.reply import command_name, parse

MAX_PASTE = 16 * 1024
# swaks marks a reply "<-" (plain), "<~" (in TLS), "<**" / "<~**" (an error) and "<~*" (a
# TLS error); Sendmail's transcript marks it "<<<".
_PREFIX = re.compile(r"[ \t]{0,40}(?:<~?\*{1,2}|<~|<-|<<<)[ \t]{0,40}")
# Microsoft 365 / Exchange: "Remote Server returned '550 5.1.10 ...'" (also "... at host").
_MS_RETURNED = re.compile(r"\bRemote Server returned '([^']{1,2000})'", re.IGNORECASE)
# Gmail: "The response from the remote server was:" then the reply on the next line(s).
_GMAIL_RESPONSE = re.compile(
    r"\bThe response (?:from the remote server )?was:[ \t]{0,40}\n?[ \t\n]{0,200}", re.IGNORECASE
)
# Sendmail: "... stat=Deferred: Connection refused" or "stat=User unknown" with "dsn=5.1.1".
_STAT = re.compile(r"\bstat=([^,]{0,500})")
_DSN = re.compile(r"\bdsn=([245])\.(\d{1,3})\.(\d{1,3})\b")
# Yahoo writes a colon after the code: "501: 5.1.8 Sender address rejected".
_CODE_COLON = re.compile(r"([2-5]\d\d):[ \t]{1,40}(?=[245]\.\d{1,3}\.\d{1,3}\b)")
# qmail-era servers (vpopmail's chkuser, Gmail relaying them) write "550 #5.1.0 Address rejected."
_HASH_STATUS = re.compile(r"#([245])\.(\d{1,3})\.(\d{1,3})\b[ \t]{0,40}")
# A multi-line reply flattened onto one line (Postfix: "refused to talk to me: 220-mx.example
# 421 4.2.1 Service refused"): a later code with its enhanced code of the same class.
_LATER_REFUSAL = re.compile(r"(?<!\S)([45])\d\d[ -]\1\.\d{1,3}\.\d{1,3}\b")
_RELAY_CMD = re.compile(r"\bafter (RCPT|MAIL|DATA|end of data|EHLO|HELO|CONNECT)\b", re.IGNORECASE)


def parse_pasted(item: str) -> Reply | None:
    """The reply in one pasted item (a line or a block), or None."""
    r = _unwrapped(item[:MAX_PASTE])
    return None if r is None else _refined(r)


def stream_reply(line: str, scanned: Reply | None) -> Reply | None:
    """The reply in one line of a log read as a stream, as `parse_pasted` reads the same line.

    `scanned` is what the log reader found; only lines that a cheap look shows to be one of
    the wrapped forms above are read again, so a long log costs about what it cost before.
    A caller may skip lines without a reply whose fourth character is not ":" (see below).
    """
    if "\n" in line:
        return None if scanned is None else _refined(scanned)
    if scanned is None:
        # The one wrapped form the log reader finds nothing in: "501: 5.1.8 ...".
        return parse_pasted(line) if line[3:4] == ":" and line[:3].isdigit() else None
    if (
        "returned '" in line
        or "RETURNED '" in line
        or "stat=" in line
        or " was:" in line
        or "<<<" in line
    ):
        return parse_pasted(line)
    return _refined(scanned)


def _refined(r: Reply) -> Reply:
    """A reply as its last line and its written status say: a greeting that goes on to refuse
    is that refusal (the client acts on the last line, RFC 5321 §4.2.1), and "#5.1.0" before
    the text is the enhanced code."""
    if r.code is not None and r.code < 400 and "".join(r.lines[:1]).lstrip()[3:4] == "-":
        m = _LATER_REFUSAL.search(r.text[:MAX_PASTE])
        later = parse(r.text[m.start() :]) if m else None
        if later is not None and later.code is not None:
            return replace(
                later, lines=r.lines, form=r.form, other_codes=(r.code,), command=r.command
            )
    if r.code is not None and r.enhanced is None:
        h = _HASH_STATUS.match(r.text)
        if h:
            enh = EnhancedCode(*(int(x) for x in h.groups()))
            if enh.klass == r.code // 100:
                return replace(r, enhanced=enh, text=r.text[h.end() :])
    return r


def _unwrapped(s: str) -> Reply | None:
    """The reply inside the wrapping a pasted item has: M365, Gmail, swaks, Sendmail, Yahoo."""
    lead = s.lstrip(" \t")
    colon = _CODE_COLON.match(lead[:60])
    if colon:
        s = f"{colon.group(1)} {lead[colon.end() :]}"
    m = _MS_RETURNED.search(s)
    if m:
        r = parse(m.group(1))
        if r is not None:
            return r
    m = _GMAIL_RESPONSE.search(s)
    if m:
        r = parse(_first_paragraph(s[m.end() :]))
        if r is not None:
            return r
    m = _PREFIX.match(s)
    if m:
        r = parse(s[m.end() :])
        if r is not None:
            return r if "<<<" in m.group(0) else replace(r, form=Form.SWAKS)
    return _sendmail_stat(s) or parse(s)


def _first_paragraph(s: str) -> str:
    """The text up to the first blank line: a reply that may span several lines."""
    lines: list[str] = []
    for line in s.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.strip():
            break
        lines.append(line.strip())
    return " ".join(lines)


def _sendmail_stat(s: str) -> Reply | None:
    """A Sendmail log line: the reply after `stat=`, with `dsn=` as its enhanced code."""
    m = _STAT.search(s)
    if not m:
        return None
    stat = m.group(1).strip()
    d = _DSN.search(s)
    enh = EnhancedCode(int(d.group(1)), int(d.group(2)), int(d.group(3))) if d else None
    _, _, rest = stat.partition(":")
    inner = parse(rest) if rest.strip() else None
    if inner is not None and inner.code is not None:
        return inner if inner.enhanced is not None or enh is None else replace(inner, enhanced=enh)
    if enh is None:
        return None
    c = _RELAY_CMD.search(s)
    return Reply(None, enh, stat, (s,), Form.LOG, command_name(c.group(1)) if c else None)
