/* syscalls.bpf.c - count system calls per (container cgroup, syscall number)
 * in the kernel, on the raw tracepoint raw_syscalls/sys_enter.
 *
 * Maps (user space reads `counts` and `overflow`, fills `watched`):
 *   watched   HASH  u64 cgroup id -> u32 slot (1..MAX_SLOTS-1; slot 0 is
 *             "other", counted only with count_all)
 *   counts    PERCPU_ARRAY u64, index slot * MAX_SYSCALLS + column, where
 *             column = nr for a native syscall (nr < COMPAT_BASE) and
 *             COMPAT_BASE + nr for a 32-bit compat syscall (x86 ia32,
 *             detected through TS_COMPAT in task->thread_info.status; on
 *             kernels without that field every syscall counts as native)
 *   overflow  PERCPU_ARRAY[1] u64: syscalls not countable in `counts`
 *             (nr >= COMPAT_BASE, negative nr, x32 numbers, slot too big)
 *
 * Knobs (.rodata):
 *   v1_subsys_id  -1: key by cgroup v2 id (bpf_get_current_cgroup_id()'s
 *                 value: task->cgroups->dfl_cgrp->kn->id);
 *                 >= 0: key by the kernfs id of the task's cgroup in that
 *                 v1 hierarchy (task->cgroups->subsys[id]->cgroup->kn->id,
 *                 the same value as classify's exec_event.v1_cgroup_id).
 *   count_all     count tasks of unwatched cgroups into slot 0.
 *
 * The hot path reads the task through bpf_get_current_task_btf() (direct,
 * verifier-checked loads rather than bpf_probe_read_kernel calls).
 */
#include "pybpf.h"
#include "kernel_types.h"

char LICENSE[] SEC("license") = "GPL";

#define MAX_SYSCALLS 1024	/* columns per slot */
#define COMPAT_BASE 512		/* native nr < 512, compat at 512 + nr */
#define MAX_SLOTS 512

const volatile int v1_subsys_id = -1;
const volatile bool count_all = false;

/* Exposed as .rodata so user space reads the layout from the object. */
const volatile __u32 max_syscalls = MAX_SYSCALLS;
const volatile __u32 compat_base = COMPAT_BASE;
const volatile __u32 max_slots = MAX_SLOTS;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u64);
	__type(value, __u32);
} watched SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SLOTS * MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} overflow SEC(".maps");

static __always_inline void count_overflow(void)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&overflow, &zero);

	if (c)
		*c += 1;
}

SEC("raw_tp/sys_enter")
int count_syscalls(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 cgid;

	if (v1_subsys_id < 0) {
		/* what bpf_get_current_cgroup_id() returns, without the call */
		cgid = task->cgroups->dfl_cgrp->kn->id;
	} else {
		if (v1_subsys_id >= bpf_core_field_size(task->cgroups->subsys) / sizeof(void *))
			return 0;
		cgid = task->cgroups->subsys[v1_subsys_id]->cgroup->kn->id;
	}

	__u32 slot = 0;
	__u32 *watched_slot = bpf_map_lookup_elem(&watched, &cgid);
	if (watched_slot)
		slot = *watched_slot;
	else if (!count_all)
		return 0;

	__u64 nr = ctx->args[1];
	if (nr >= COMPAT_BASE || slot >= MAX_SLOTS) {
		count_overflow();
		return 0;
	}
	if (bpf_core_field_exists(task->thread_info.status) &&
	    (task->thread_info.status & X86_TS_COMPAT))
		nr += COMPAT_BASE;

	__u32 index = slot * MAX_SYSCALLS + (__u32)nr;
	__u64 *c = bpf_map_lookup_elem(&counts, &index);
	if (c)
		*c += 1;
	return 0;
}
