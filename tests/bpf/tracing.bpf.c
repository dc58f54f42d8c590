/* One program of each tracing flavour, all counting getppid() calls of one
 * process: a classic tracepoint (tp/), a raw tracepoint (raw_tp/), a BTF
 * tracepoint (tp_btf/) and a kprobe (kprobe/, which loads but cannot attach
 * on a kernel without kprobes).  Counts land in a BTF-typed array (slot per
 * flavour, a struct value) and a per-CPU array, so that tests can check the
 * decoded map contents. */
#include "pybpf.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 target_tgid = 0;
const volatile __u32 getppid_nr = 110;	/* x86_64; the test sets the ABI's number */

enum flavour { FLAVOUR_TP = 0, FLAVOUR_RAW_TP = 1, FLAVOUR_TP_BTF = 2, FLAVOUR_KPROBE = 3 };

struct hit {
	__u64 calls;
	__u32 last_tid;
	__u32 flavour;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct hit);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} percpu_calls SEC(".maps");

static __always_inline int count(__u32 flavour)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 zero = 0;
	struct hit *h;
	__u64 *c;

	if ((__u32)(pid_tgid >> 32) != target_tgid)
		return 0;
	h = bpf_map_lookup_elem(&hits, &flavour);
	if (h) {
		__sync_fetch_and_add(&h->calls, 1);
		h->last_tid = (__u32)pid_tgid;
		h->flavour = flavour;
	}
	c = bpf_map_lookup_elem(&percpu_calls, &zero);
	if (c)
		(*c)++;
	return 0;
}

SEC("tp/syscalls/sys_enter_getppid")
int on_tp(void *ctx)
{
	return count(FLAVOUR_TP);
}

SEC("raw_tp/sys_enter")
int on_raw_tp(__u64 *ctx)
{
	/* struct bpf_raw_tracepoint_args: args[1] is the syscall number */
	if (ctx[1] != getppid_nr)
		return 0;
	return count(FLAVOUR_RAW_TP);
}

SEC("tp_btf/sys_enter")
int on_tp_btf(__u64 *ctx)
{
	/* sys_enter(struct pt_regs *regs, long id) */
	if (ctx[1] != getppid_nr)
		return 0;
	return count(FLAVOUR_TP_BTF);
}

SEC("kprobe/__x64_sys_getppid")
int on_kprobe(void *ctx)
{
	return count(FLAVOUR_KPROBE);
}
