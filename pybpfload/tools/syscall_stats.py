"""Per-container system-call counts over time: totals, deltas, what is new.

The kernel keeps running counts; each interval the tool reads them and feeds
this model with the totals it saw.  The model turns them into what the views
show: per container, per syscall, the total since start, the count in the
last interval, whether the syscall appeared in this interval, when the
container was last active (idle containers stay a while before they drop
off) and whether it has stopped.
"""

import time


class SyscallRow:
    __slots__ = ("name", "total", "delta", "new", "last_active")

    def __init__(self, name):
        self.name = name
        self.total = 0
        self.delta = 0
        self.new = False
        self.last_active = 0.0


class ContainerStats:
    """What one container did; ``rows`` by syscall name."""

    def __init__(self, key, container_id="", name="", runtime=""):
        self.key = key
        self.container_id = container_id
        self.name = name
        self.runtime = runtime
        self.rows = {}
        self.first_seen = None
        self.last_active = 0.0
        self.stopped = False
        self.interval_total = 0

    @property
    def total(self):
        return sum(r.total for r in self.rows.values())

    def top(self, n=None, exclude=()):
        """Rows sorted by recent activity, then by total; ``exclude`` names dropped."""
        rows = [r for r in self.rows.values() if r.name not in exclude]
        rows.sort(key=lambda r: (-r.delta, -r.total, r.name))
        return rows if n is None else rows[:n]


class SyscallStats:
    """The model the live view, the JSON lines and the exporter read."""

    def __init__(self, idle_keep=30.0, clock=time.monotonic):
        self.idle_keep = idle_keep
        self.clock = clock
        self.containers = {}
        self.intervals = 0

    def container(self, key, **ident):
        c = self.containers.get(key)
        if c is None:
            c = self.containers[key] = ContainerStats(key, **ident)
        else:
            for k, v in ident.items():
                if v:
                    setattr(c, k, v)
        return c

    def update(self, totals):
        """Feed one interval: ``totals`` maps container key -> {syscall name: total}.

        Totals are cumulative (as the kernel counts); a total that went down
        (the counter slot was reused) starts the count again from it.
        """
        now = self.clock()
        self.intervals += 1
        for c in self.containers.values():
            c.interval_total = 0
            for r in c.rows.values():
                r.delta = 0
                r.new = False
        for key, counts in totals.items():
            c = self.container(key)
            if c.first_seen is None:
                c.first_seen = now
            for name, total in counts.items():
                row = c.rows.get(name)
                if row is None:
                    row = c.rows[name] = SyscallRow(name)
                    row.new = True
                    delta = total
                else:
                    delta = total - row.total if total >= row.total else total
                row.total = total if total >= row.total else row.total + total
                row.delta = delta
                if delta:
                    row.last_active = now
                    c.last_active = now
                c.interval_total += delta

    def mark_stopped(self, key):
        c = self.containers.get(key)
        if c is not None:
            c.stopped = True

    def visible(self):
        """Containers worth showing: active now, or idle/stopped for less than ``idle_keep``."""
        now = self.clock()
        out = [c for c in self.containers.values()
               if c.rows and (now - c.last_active) <= self.idle_keep]
        out.sort(key=lambda c: (-c.interval_total, -c.total, c.name or c.container_id))
        return out

    def expire(self):
        """Forget containers idle or stopped for longer than ``idle_keep``; returns their keys."""
        now = self.clock()
        gone = [k for k, c in self.containers.items()
                if c.rows and (now - c.last_active) > self.idle_keep and c.stopped]
        for k in gone:
            del self.containers[k]
        return gone
