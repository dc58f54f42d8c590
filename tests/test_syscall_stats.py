from pybpfload.tools.syscall_stats import SyscallStats


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_totals_deltas_and_new_markers():
    clock = Clock()
    s = SyscallStats(idle_keep=10, clock=clock)
    s.container("c1", container_id="abc", name="web", runtime="docker")
    s.update({"c1": {"read": 10, "getppid": 5}})
    rows = {r.name: r for r in s.containers["c1"].top()}
    assert rows["read"].total == 10 and rows["read"].delta == 10 and rows["read"].new
    clock.t += 1
    s.update({"c1": {"read": 12, "getppid": 5, "openat": 1}})
    rows = {r.name: r for r in s.containers["c1"].top()}
    assert (rows["read"].total, rows["read"].delta, rows["read"].new) == (12, 2, False)
    assert (rows["getppid"].delta, rows["getppid"].new) == (0, False)
    assert rows["openat"].new and rows["openat"].delta == 1
    # sorted by recent activity first
    assert [r.name for r in s.containers["c1"].top()][:2] == ["read", "openat"]


def test_idle_containers_stay_then_drop_when_stopped():
    clock = Clock()
    s = SyscallStats(idle_keep=10, clock=clock)
    s.update({"c1": {"read": 1}, "c2": {"read": 1}})
    clock.t += 5
    s.update({"c1": {"read": 2}, "c2": {"read": 1}})
    assert {c.key for c in s.visible()} == {"c1", "c2"}
    clock.t += 6
    s.update({"c1": {"read": 3}, "c2": {"read": 1}})
    assert {c.key for c in s.visible()} == {"c1"}
    s.mark_stopped("c2")
    assert s.expire() == ["c2"]
    assert "c2" not in s.containers


def test_exclude_filters_rows():
    s = SyscallStats()
    s.update({"c": {"read": 9, "write": 9, "getppid": 1}})
    assert [r.name for r in s.containers["c"].top(exclude={"read", "write"})] == ["getppid"]
