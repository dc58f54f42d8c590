/* The README's library example: a .rodata setting, a ring buffer of
 * structured events (built in a per-CPU scratch map) and a hash map with struct keys and values, all for the
 * getppid() calls of one process. */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0;
const volatile __u64 cookie = 0;

struct event {
	__u32 tgid;
	__u32 tid;
	__u64 cookie;
	char comm[16];
};

struct call_key {
	__u32 tgid;
	__u32 tid;
};

struct call_stats {
	__u64 calls;
	__u64 cookie_sum;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} events SEC(".maps");

/* the event is built here (which also puts struct event in the BTF) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct call_key);
	__type(value, struct call_stats);
} calls SEC(".maps");

SEC("tp/syscalls/sys_enter_getppid")
int emit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct call_key key = { .tgid = pid_tgid >> 32, .tid = (__u32)pid_tgid };
	struct call_stats zero = {}, *stats;
	struct event *e;
	__u32 zero32 = 0;

	if (key.tgid != target_tgid)
		return 0;
	stats = bpf_map_lookup_elem(&calls, &key);
	if (!stats) {
		bpf_map_update_elem(&calls, &key, &zero, BPF_NOEXIST);
		stats = bpf_map_lookup_elem(&calls, &key);
		if (!stats)
			return 0;
	}
	__sync_fetch_and_add(&stats->calls, 1);
	__sync_fetch_and_add(&stats->cookie_sum, cookie);

	e = bpf_map_lookup_elem(&scratch, &zero32);
	if (!e)
		return 0;
	e->tgid = key.tgid;
	e->tid = key.tid;
	e->cookie = cookie;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_output(&events, e, sizeof(*e), 0);
	return 0;
}
