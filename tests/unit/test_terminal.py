"""The terminal boundary: control characters escaped, JSON exact, folding only on a terminal."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tracer import terminal
from tracer.terminal import Terminal, fold, safe

DATA = Path(__file__).parent.parent / "data" / "v1"
ESC_NAME = "\x1b[2J\x1b[31mevil\x07"


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("rst_server", "rst_server"),
        ("\x1b[2J\x1b[31mevil\x07", "\\x1b[2J\\x1b[31mevil\\x07"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),  # NUL, DEL and the 8-bit CSI
        ("ab\u202edc", "ab\\u202edc"),  # a bidi override would reverse what follows
        ("x\u2028y", "x\\u2028y"),
        ("caf\u00e9 \u6f22\u5b57", "caf\u00e9 \u6f22\u5b57"),  # letters of any language stay
        ("bad\udcff", "bad\\xff"),  # a byte that was not UTF-8 (surrogateescape)
        ("soft\u00adhyphen", "soft\\xadhyphen"),
    ],
)
def test_safe_escapes_exactly_the_control_characters(raw, shown):
    assert safe(raw) == shown


def test_fold_cuts_between_words_and_never_inside_one():
    line = "rst_server[13622] closed 127.0.0.1:43923<-127.0.0.1:45398 with 1000 unread bytes -> RST"
    assert fold(line, 40) == [
        "rst_server[13622] closed",
        "    127.0.0.1:43923<-127.0.0.1:45398",
        "    with 1000 unread bytes -> RST",
    ]
    assert fold(line, None) == [line]
    assert fold(line, 200) == [line]
    # A word longer than the width stays whole.
    assert fold("short " + "x" * 30 + " end", 10) == ["short", "    " + "x" * 30, "    end"]
    # Leading indentation is kept on every piece.
    assert fold("  -> a b c d", 9) == ["  -> a b", "      c d"]


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_chain_on_a_pipe_is_one_line_per_record_escaped(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    head = f"{ESC_NAME}[7] closed " + "127.0.0.1:1<-127.0.0.1:2 " * 6
    Terminal().chain([head, "  -> client[8] write: ECONNRESET"])
    assert out.getvalue() == (safe(head) + "\n" + "  -> client[8] write: ECONNRESET\n")
    assert "\x1b" not in out.getvalue()


def test_chain_on_a_terminal_folds_at_its_width_with_styles(monkeypatch):
    out = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.delenv("NO_COLOR", raising=False)
    Terminal(width=30).chain([f"{ESC_NAME}[7] closed a:1<-b:2 with 1000 unread bytes", "  -> c[8] EPIPE"])
    assert out.getvalue() == (
        "\x1b[1m\\x1b[2J\\x1b[31mevil\\x07[7]\x1b[0m\n"
        "\x1b[1m    closed a:1<-b:2 with 1000\x1b[0m\n"
        "\x1b[1m    unread bytes\x1b[0m\n"
        "\x1b[31m  -> c[8] EPIPE\x1b[0m\n"
    )
    out2 = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out2)
    Terminal(wide=True, width=30).chain(["a " * 40])
    assert out2.getvalue() == "\x1b[1m" + "a " * 40 + "\x1b[0m\n"


def test_json_keeps_the_exact_characters(monkeypatch):
    from tracer import render

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    Terminal().data(render.to_json({"comm": ESC_NAME}))
    assert out.getvalue() == '{"comm":"\\u001b[2J\\u001b[31mevil\\u0007"}\n'
    assert json.loads(out.getvalue())["comm"] == ESC_NAME


def test_messages_on_stderr_are_escaped(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    t = Terminal()
    t.note(f"note {ESC_NAME}")
    t.warning(f"file:3: {ESC_NAME}")
    t.error(f"bad {ESC_NAME}")
    assert err.getvalue() == (
        "note \\x1b[2J\\x1b[31mevil\\x07\n"
        "rsttrace: warning: file:3: \\x1b[2J\\x1b[31mevil\\x07\n"
        "rsttrace: error: bad \\x1b[2J\\x1b[31mevil\\x07\n"
    )


def hostile_trace(tmp_path) -> Path:
    """The recorded trace with the processes renamed to escape sequences."""
    lines = (DATA / "unread_default.jsonl").read_text().splitlines()
    out = []
    for line in lines:
        rec = json.loads(line)
        if rec.get("type") == "event":
            rec["comm"] = ESC_NAME
        if rec.get("type") == "incident":
            rec["culprit"]["comm"] = ESC_NAME
            rec["victim"]["comm"] = ESC_NAME
            rec["reason"] = "\x1b]0;owned\x07"
        out.append(json.dumps(rec))
    p = tmp_path / "hostile.jsonl"
    p.write_text("\n".join(out) + "\n")
    return p


def rsttrace(*args):
    return subprocess.run(
        [sys.executable, "-m", "tracer", *args],
        capture_output=True,
        timeout=120,
        cwd=Path(__file__).parent.parent.parent,
    )


def test_report_escapes_names_from_the_file_and_json_keeps_them(tmp_path):
    p = hostile_trace(tmp_path)
    r = rsttrace("report", str(p))
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stdout and b"\x07" not in r.stdout
    line = next(x for x in r.stdout.decode().splitlines() if "abort-on-close:" in x)
    assert line == (
        "  2026-11-21 07:22:19.340 abort-on-close: \\x1b[2J\\x1b[31mevil\\x07[16107] closed "
        "127.0.0.1:35317<-127.0.0.1:56894 with 1000 unread bytes -> RST (abort on close) -> "
        "\\x1b[2J\\x1b[31mevil\\x07[16109] write: ECONNRESET, write: EPIPE, SIGPIPE: killed"
    )
    r = rsttrace("report", "--json", str(p))
    assert r.returncode == 0
    s = json.loads(r.stdout)
    assert s["incidents_list"][0]["culprit_comm"] == ESC_NAME
    assert s["by_culprit"][0]["comm"] == ESC_NAME


def test_merge_text_escapes(tmp_path):
    p = hostile_trace(tmp_path)
    q = tmp_path / "second.jsonl"
    shutil.copy(p, q)
    r = rsttrace("merge", str(p), str(q))
    assert r.returncode == 0, r.stderr
    assert b"\x1b" not in r.stdout and r.stdout.count(b"\\x1b[2J\\x1b[31mevil\\x07[16107]") == 2


def test_stdout_closed_is_one_line_and_exit_13(tmp_path):
    p = hostile_trace(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", "report", "--limit", "0", str(p), str(p), str(p)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parent.parent.parent,
    )
    proc.stdout.close()  # the reader went away (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 13
    assert "Traceback" not in err
    assert err.splitlines()[-1] == "rsttrace: error: stdout was closed (EPIPE): stopping"


def test_no_color_and_pipes_get_no_escape_codes(monkeypatch):
    out = FakeTTY()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setenv("NO_COLOR", "1")
    Terminal(width=80).chain(["head", "  -> x EPIPE"])
    assert out.getvalue() == "head\n  -> x EPIPE\n"
    assert terminal._is_tty(io.StringIO()) is False


def run_in_pty(args, columns: int) -> bytes:
    """Run rsttrace with stdout on a pseudo-terminal `columns` wide; what the screen got."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.ONLCR  # keep "\n" as written
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracer", *args],
        stdout=slave,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parent.parent.parent,
        env={**os.environ, "NO_COLOR": "1"},
    )
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    return out


def test_report_on_a_terminal_folds_at_its_width_between_words():
    piped = rsttrace("report", str(DATA / "unread_default.jsonl")).stdout.decode().splitlines()
    long = next(x for x in piped if "abort-on-close:" in x)
    assert len(long) > 100  # one line on a pipe, however long
    screen = run_in_pty(["report", str(DATA / "unread_default.jsonl")], 60).decode().splitlines()
    assert max(len(x) for x in screen) <= 60
    start = next(i for i, x in enumerate(screen) if "abort-on-close:" in x)
    pieces = [screen[start]] + [x for x in screen[start + 1 : start + 6] if x.startswith("      ")]
    # Joined back (continuation indent dropped), the pieces are the piped line: no word was cut.
    assert " ".join(p.strip() for p in pieces) == long.strip()
    wide = run_in_pty(["-w", "report", str(DATA / "unread_default.jsonl")], 60).decode().splitlines()
    assert long in wide


def test_fold_counts_wide_characters_as_two_columns():
    from tracer.terminal import columns

    assert columns("abc") == 3 and columns("\u6f22\u5b57") == 4 and columns("e\u0301") == 1
    assert fold("\u6f22\u5b57\u6f22 \u6f22\u5b57", 8) == ["\u6f22\u5b57\u6f22", "    \u6f22\u5b57"]
