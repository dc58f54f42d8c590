"""The ``syscalls`` command without the kernel: views, options, cgroup paths.

What the live view and the plain reports print for a model fed by hand
(hostile container names stay escaped, ``*NEW`` marks new rows, rows follow
recent activity, ``--top`` and ``--exclude`` apply), the JSON shape, the
Prometheus text, and the guards: a cgroup path cannot escape the cgroup
mount, bad options are one-line errors.
"""

import argparse
import io
import json
import os
import subprocess
import sys

from pybpfload.tools import syscalls, syscalls_view
from pybpfload.tools.syscall_stats import SyscallStats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Clock:
    t = 50.0

    def __call__(self):
        return self.t


def _model():
    clock = Clock()
    s = SyscallStats(idle_keep=10, clock=clock)
    s.container("k1", container_id="a" * 64, name="web\x1b[2Jevil", runtime="docker")
    s.update({"k1": {"read": 100, "getppid": 7}})
    clock.t += 1
    s.update({"k1": {"read": 110, "getppid": 7, "openat": 3}})
    return s, clock


def _args(*argv):
    p = argparse.ArgumentParser()
    syscalls.add_arguments(p)
    return p.parse_args(list(argv))


def test_block_shows_header_rows_and_new_marker_escaped():
    s, _ = _model()
    out = io.StringIO()
    view = syscalls_view.View(out, live=False, top=10, exclude=set())
    view.show(s.visible(), {"overflow": 0, "lost": 0}, 1)
    text = out.getvalue()
    assert "\x1b" not in text and "web\\x1b[2Jevil" in text
    lines = text.splitlines()
    assert lines[1].startswith("a" * 12 + "  ") and "a" * 13 not in lines[1]
    assert "docker" in lines[1] and "total          120" in lines[1]
    rows = [ln.split() for ln in lines[3:6]]
    # most recent activity first: read (+10), openat (+3, new), getppid (+0)
    assert [r[0] for r in rows] == ["read", "openat", "getppid"]
    assert rows[1][-1] == "*NEW" and rows[0][-1] != "*NEW" and rows[2][1:] == ["7", "0"]


def test_live_view_redraws_and_fits_the_terminal(monkeypatch):
    s, _ = _model()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "7")
    out = io.StringIO()
    view = syscalls_view.View(out, live=True, top=2, exclude={"read"})
    view.start()
    view.show(s.visible(), {}, 1)
    view.stop()
    text = out.getvalue()
    frame = text.rsplit(syscalls_view.CLEAR, 1)[1]
    assert frame.count("\n") <= 7 and all(len(ln) <= 40 for ln in frame.splitlines()
                                          if not ln.startswith("\x1b"))
    assert "openat" in frame and " read " not in frame
    assert frame.count("\n") == 6   # cut to the terminal: LINES - 1
    assert text.endswith(syscalls_view.SHOW_CURSOR)


def test_top_and_exclude_in_rows():
    s, _ = _model()
    c = s.containers["k1"]
    rows = syscalls_view.container_rows(c, 1, {"read"})
    assert len(rows) == 2 and rows[1].split()[0] == "openat"


def test_json_lines_shape_and_container_filter():
    s, _ = _model()
    mon = syscalls.Monitor(_args("--exclude", "openat", "--container", "aaaa"))
    mon.stats = s
    (line,) = mon.json_lines()
    rec = json.loads(line)
    assert rec["container_id"] == "a" * 64 and rec["runtime"] == "docker"
    assert rec["container_name"] == "web\x1b[2Jevil"          # JSON carries the real name
    assert rec["syscalls"] == {"read": {"total": 110, "delta": 10},
                               "getppid": {"total": 7, "delta": 0}}
    assert rec["time"].endswith("Z") and rec["stopped"] is False
    mon.args.container = "other"
    assert mon.json_lines() == []
    mon.args.container = "web\x1b[2Jevil"
    assert len(mon.json_lines()) == 1


def test_prometheus_text():
    s, _ = _model()
    mon = syscalls.Monitor(_args())
    mon.stats = s
    mon.health.update(intervals=2, overflow=3, lost=4)
    text = mon.render_metrics()
    assert ('pybpfload_syscalls_total{container_id="' + "a" * 64 + '",container_name='
            '"web\x1b[2Jevil",runtime="docker",syscall="read"} 110\n') in text
    assert "\npybpfload_syscalls_intervals_total 2\n" in text
    assert "\npybpfload_syscalls_overflow_total 3\n" in text
    assert "\npybpfload_syscalls_exec_events_lost_total 4\n" in text
    assert "\npybpfload_syscalls_containers_watched 0\n" in text


def test_noise_set_and_summary():
    assert {"read", "write", "ioctl", "rt_sigprocmask", "rt_sigaction", "poll", "ppoll",
            "pselect6", "select"} <= syscalls.NOISE
    s, _ = _model()
    mon = syscalls.Monitor(_args("--exclude-noise"))
    mon.stats = s
    assert "read" in mon.exclude
    first, last = mon.summary()
    assert "web\\x1b[2Jevil" in first and "openat 3" in first and "read" not in first
    assert "exec events lost" in last and "overflow" in last


def test_cgroup_paths_cannot_escape_the_mount(tmp_path):
    base = str(tmp_path)
    assert syscalls.cgroup_dir(base, "/docker/abc") == os.path.join(base, "docker", "abc")
    assert syscalls.cgroup_dir(base, "/") == base
    assert syscalls.cgroup_dir(base, "/../../etc") is None
    assert syscalls.cgroup_dir(base, "/a/./b") is None
    assert syscalls.cgroup_dir(base, ".../truncated/x") is None
    os.mkdir(os.path.join(base, "c"))
    assert syscalls.cgroup_id_of(os.path.join(base, "c")) == os.stat(
        os.path.join(base, "c")).st_ino
    assert syscalls.cgroup_id_of(os.path.join(base, "gone")) is None


def test_compat_names():
    counter = syscalls.Counter.__new__(syscalls.Counter)
    counter.compat_base = 512
    assert counter._name(39) == "getpid"
    assert counter._name(512 + 64) == "i386:getppid"


def test_bad_options_are_one_line_errors():
    for argv in (["--interval", "0"], ["--top", "0"], ["--prometheus", "nope"]):
        r = subprocess.run([sys.executable, "-m", "pybpfload", "syscalls", *argv], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        err = r.stderr.decode()
        assert r.returncode == 1 and err.startswith("pybpfload: error: ") \
            and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
