/* syscalls.bpf.c - count system calls per (container cgroup, syscall number)
 * in the kernel, on the syscall entry tracepoint (raw_syscalls/sys_enter).
 *
 * Two programs, the same counting; user space loads and attaches ONE:
 *   count_syscalls      tp_btf/sys_enter, kernel >= 5.12 (bpf_get_current_task_btf,
 *                       atomic fetch): the task is read with direct,
 *                       verifier-checked loads and the last cgroup -> slot
 *                       answer is cached per CPU (see `last_lookup`).
 *   count_syscalls_raw  raw_tp/sys_enter for older kernels: helper calls
 *                       (bpf_get_current_cgroup_id, bpf_probe_read_kernel)
 *                       and a hash lookup every time.
 *
 * Maps (user space reads `counts` and `overflow`, fills `watched`):
 *   watched   HASH  u64 cgroup id -> u32 slot (1..MAX_SLOTS-1; slot 0 is
 *             "other", counted only with count_all)
 *   watch_state  ARRAY[1] {u32 generation, u32 empty}: user space
 *             writes it AFTER every change of `watched` (update or delete):
 *             generation + 1, and empty = 1 when `watched` has no entry
 *             (0, the initial value, means "look"); a cached answer taken
 *             under an older generation is not used, and when empty (and
 *             no count_all) a syscall costs two loads.  Filling `watched`
 *             before attaching, without touching watch_state, also works.
 *   counts    PERCPU_ARRAY u64, index slot * MAX_SYSCALLS + column, where
 *             column = nr for a native syscall (nr < COMPAT_BASE) and
 *             COMPAT_BASE + nr for a 32-bit compat syscall (x86 ia32,
 *             detected through TS_COMPAT in task->thread_info.status; on
 *             kernels without that field every syscall counts as native)
 *   overflow  PERCPU_ARRAY[1] u64: syscalls not countable in `counts`
 *             (nr >= COMPAT_BASE, negative nr, x32 numbers, slot too big)
 *   last_lookup  PERCPU_ARRAY[1]: this CPU's last (cgroup id, generation)
 *             -> slot answer of `watched` (NOT_WATCHED when absent).
 *
 * Knobs (.rodata):
 *   v1_subsys_id  -1: key by cgroup v2 id (bpf_get_current_cgroup_id()'s
 *                 value: task->cgroups->dfl_cgrp->kn->id);
 *                 >= 0: key by the kernfs id of the task's cgroup in that
 *                 v1 hierarchy (task->cgroups->subsys[id]->cgroup->kn->id,
 *                 the same value as classify's exec_event.v1_cgroup_id).
 *   count_all     count tasks of unwatched cgroups into slot 0.
 *
 * Why the cache is correct: a cgroup id (kernfs id, 64-bit) is never
 * reused, so (cgroup id -> slot) only changes when user space changes
 * `watched`, and then it bumps the generation.  On a miss the program reads
 * the generation with an atomic (fully ordered) operation BEFORE the hash
 * lookup, so the answer it caches is at least as new as the generation it
 * is filed under; a hit needs the same cgroup id and the current
 * generation.  The cache is per CPU and the program does not interleave
 * with itself on one CPU (tracepoint probes run with preemption disabled;
 * kernels >= 6.2 also skip a program re-entered on the same CPU).
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

/* slot value cached for a cgroup that is not in `watched` */
#define NOT_WATCHED 0xffffffffu

struct watch_state {
	__u32 generation;	/* + 1 after each change of `watched` */
	__u32 empty;		/* 1: `watched` has no entry; 0: it may have */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct watch_state);
} watch_state SEC(".maps");

/* Nothing to count: no cgroup watched, no count_all (the cheapest test). */
static __always_inline bool idle(struct watch_state *state)
{
	return !state || (state->empty && !count_all);
}

struct last_lookup {
	__u64 cgroup_id;	/* 0: empty (no cgroup has id 0) */
	__u32 generation;	/* watch_state.generation of the answer */
	__u32 slot;		/* the answer, or NOT_WATCHED */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct last_lookup);
} last_lookup SEC(".maps");

static __always_inline void count_overflow(void)
{
	__u32 zero = 0;
	__u64 *c = bpf_map_lookup_elem(&overflow, &zero);

	if (c)
		*c += 1;
}

/* Count syscall `nr` (compat: a 32-bit one) of a task whose `watched`
 * answer is `slot` (NOT_WATCHED: not watched). */
static __always_inline int count(__u32 slot, __u64 nr, bool compat)
{
	if (slot == NOT_WATCHED) {
		if (!count_all)
			return 0;
		slot = 0;
	}
	if (nr >= COMPAT_BASE || slot >= MAX_SLOTS) {
		count_overflow();
		return 0;
	}
	if (compat)
		nr += COMPAT_BASE;

	__u32 index = slot * MAX_SYSCALLS + (__u32)nr;
	__u64 *c = bpf_map_lookup_elem(&counts, &index);
	if (c)
		*c += 1;
	return 0;
}

static __always_inline __u32 watched_slot(__u64 cgid)
{
	__u32 *slot = bpf_map_lookup_elem(&watched, &cgid);

	return slot ? *slot : NOT_WATCHED;
}

/* The fast program: direct loads from the task, the per-CPU cache. */
SEC("tp_btf/sys_enter")
int count_syscalls(__u64 *ctx)
{
	__u32 zero = 0;
	struct watch_state *state = bpf_map_lookup_elem(&watch_state, &zero);
	if (idle(state))
		return 0;

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

	struct last_lookup *last = bpf_map_lookup_elem(&last_lookup, &zero);
	if (!last || !state)
		return 0;
	__u32 slot;
	if (last->cgroup_id == cgid && last->generation == state->generation) {
		slot = last->slot;
	} else {
		/* ordered before the lookup: the answer is at least this new */
		__u32 generation = __sync_fetch_and_add(&state->generation, 0);
		slot = watched_slot(cgid);
		last->cgroup_id = cgid;
		last->generation = generation;
		last->slot = slot;
	}
	if (slot == NOT_WATCHED && !count_all)
		return 0;
	return count(slot, ctx[1], bpf_core_field_exists(task->thread_info.status) &&
			 (task->thread_info.status & X86_TS_COMPAT));
}

/* The program for kernels without bpf_get_current_task_btf (< 5.11). */
SEC("raw_tp/sys_enter")
int count_syscalls_raw(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	if (idle(bpf_map_lookup_elem(&watch_state, &zero)))
		return 0;

	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 cgid;

	if (v1_subsys_id < 0) {
		cgid = bpf_get_current_cgroup_id();
	} else {
		if (v1_subsys_id >= bpf_core_field_size(task->cgroups->subsys) / sizeof(void *))
			return 0;
		struct css_set *cset = CORE_READ(task, cgroups);
		struct cgroup_subsys_state *css = NULL;
		CORE_READ_INTO(&css, &cset->subsys[v1_subsys_id]);
		struct cgroup *cgrp = CORE_READ(css, cgroup);
		struct kernfs_node *kn = CORE_READ(cgrp, kn);
		cgid = CORE_READ(kn, id);
	}

	__u32 slot = watched_slot(cgid);
	if (slot == NOT_WATCHED && !count_all)
		return 0;
	bool compat = false;
	if (bpf_core_field_exists(task->thread_info.status))
		compat = CORE_READ(task, thread_info.status) & X86_TS_COMPAT;
	return count(slot, ctx->args[1], compat);
}
