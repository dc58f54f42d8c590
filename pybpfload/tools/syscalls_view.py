"""What ``syscalls`` prints: a top-like screen on a terminal, plain reports otherwise.

On a terminal every interval redraws the whole screen (cursor home, clear;
no curses): one block per container, a header line (12-char id, name,
runtime, total, rate over the last interval) and its busiest syscalls
(NAME, TOTAL, DELTA, and ``*NEW`` on rows first seen in this interval).
Piped, the same blocks are written one after another with a time line in
between, never with escape sequences.  Names come from whoever started the
container, so they pass through :func:`output.safe`.
"""

import shutil
import time

from . import output

CLEAR = "\x1b[H\x1b[2J"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"
NEW_MARK = "*NEW"


def container_header(c, interval):
    cid = output.short_id(c.container_id) or "-"
    name = output.safe(c.name or "-")
    runtime = output.safe(c.runtime or "-")
    rate = c.interval_total / interval if interval > 0 else 0.0
    state = "  [stopped]" if c.stopped else ""
    return (f"{cid:<12}  {name[:32]:<32} {runtime[:12]:<12} total {c.total:>12}  "
            f"{rate:>10.0f}/s{state}")


def container_rows(c, top, exclude):
    lines = [f"    {'SYSCALL':<24} {'TOTAL':>12} {'DELTA':>10}"]
    for r in c.top(top, exclude):
        mark = f" {NEW_MARK}" if r.new else ""
        lines.append(f"    {output.safe(r.name)[:24]:<24} {r.total:>12} {r.delta:>10}{mark}")
    return lines


def blocks(containers, interval, top, exclude):
    lines = []
    for c in containers:
        lines.append(container_header(c, interval))
        lines.extend(container_rows(c, top, exclude))
        lines.append("")
    return lines


class View:
    """Writes each interval's picture to ``out``: redrawn when ``live``."""

    def __init__(self, out, live, top, exclude):
        self.out = out
        self.live = live
        self.top = top
        self.exclude = exclude
        self.last = None

    def start(self):
        if self.live:
            self.out.write(HIDE_CURSOR + CLEAR + "pybpfload syscalls: waiting for the first "
                           "interval...\n")
            self.out.flush()

    def show(self, containers, health, watched):
        now = time.monotonic()
        interval = (now - self.last) if self.last is not None else 0.0
        self.last = now
        stamp = time.strftime("%H:%M:%S")
        head = (f"pybpfload syscalls  {stamp}  containers watched: {watched}  "
                f"overflow: {health.get('overflow', 0)}  lost execs: {health.get('lost', 0)}")
        body = blocks(containers, interval, self.top, self.exclude)
        if not containers:
            body = ["(no container made a system call yet)"]
        if self.live:
            size = shutil.get_terminal_size((120, 40))
            lines = [head, ""] + body
            lines = [ln[:size.columns] for ln in lines[:max(size.lines - 1, 1)]]
            self.out.write(CLEAR + "\n".join(lines) + "\n")
        else:
            self.out.write("\n".join([f"--- {stamp}  containers watched: {watched}"] + body)
                           + "\n")

    def stop(self):
        if self.live:
            self.out.write(SHOW_CURSOR)
            self.out.flush()
