"""Text from data and model files, made safe to show: one escape for every line a command prints or logs.

A class name, a file name or a model's metadata is whatever its file says. A terminal escape in it (ESC ] 0 ; ...
BEL retitles the window, ESC [ 2 J clears the screen, others rewrite what is shown) would run in the user's
terminal, and a newline would forge a line of the log. So every line shown goes through printable, once, where it
is printed (say, the error lines of errors and cli); what is written to JSON and CSV files keeps the exact string.
"""

import sys

_SURROGATE_ESCAPES = range(0xDC80, 0xDD00)  # os.fsdecode's stand-ins for a file name's bytes that are not UTF-8


def printable(text: object) -> str:
    """text on one line and safe to print: control and other non-printable characters (a newline, ESC, a bidi
    override) as \\n, \\x1b, \\u202e; a file name's bytes that are not UTF-8 (names need not be) as \\xNN. Printable
    text of any script is kept as it is, so escaping twice changes nothing."""
    text = str(text)
    return text if text.isprintable() else "".join(_escape(ch) for ch in text)


def _escape(ch: str) -> str:
    if ch.isprintable():
        return ch
    if ord(ch) in _SURROGATE_ESCAPES:
        return f"\\x{ord(ch) - 0xDC00:02x}"
    return ch.encode("unicode_escape").decode("ascii")  # \n, \x1b, \u202e, \ud800 (a lone surrogate), \U000e0001


def say(line: object, *, err: bool = False, flush: bool = False) -> None:
    """Print one line escaped: the log function of the commands (to stderr with err)."""
    print(printable(line), file=sys.stderr if err else sys.stdout, flush=flush)


def say_err(line: object, *, flush: bool = True) -> None:
    """One escaped line on stderr, flushed: a log beside data on stdout."""
    say(line, err=True, flush=flush)
