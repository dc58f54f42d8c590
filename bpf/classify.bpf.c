/* classify.bpf.c - capture, in the kernel, everything user space needs to
 * tell whether an exec'd program runs in a container or on the host.
 *
 * Programs:
 *   tp/sched/sched_process_exec   -> struct exec_event (one per exec)
 *   tp/sched/sched_process_exit   -> struct exit_event (thread-group leaders)
 *   raw_tp/sched_process_fork     -> struct fork_event (new processes, only
 *                                    with want_forks; a raw tracepoint, because
 *                                    only it gives the child task, needed to
 *                                    skip new threads)
 * All records go to the perf event array `events`; see events.h.
 *
 * Knobs (.rodata, set before load):
 *   v1_subsys_id  index into task->cgroups->subsys[] of the ONE cgroup v1
 *                 hierarchy whose path is captured (the row of the
 *                 controller in /proc/cgroups, == enum cgroup_subsys_id);
 *                 -1 = none.
 *   want_forks    send fork events.
 *   targ_uid      only events of this uid; 0xffffffff = every uid.
 */
#include "pybpf.h"
#include "kernel_types.h"
#include "events.h"

char LICENSE[] SEC("license") = "GPL";

const volatile int v1_subsys_id = -1;
const volatile bool want_forks = false;
const volatile __u32 targ_uid = 0xffffffff;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events SEC(".maps");

/* The exec record is far larger than the 512-byte stack: it is built in a
 * per-CPU map value.  The union also puts every record type into the
 * object's BTF, where user space finds the decoders. */
union event_scratch {
	struct exec_event exec;
	struct exit_event exit;
	struct fork_event fork;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, union event_scratch);
} scratch SEC(".maps");

static __always_inline bool uid_wanted(__u32 uid)
{
	return targ_uid == 0xffffffff || uid == targ_uid;
}

/* The parent link of a kernfs node, under either of its names. */
static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(kn->__parent))
		return CORE_READ(kn, __parent);
	struct kernfs_node___pre615 *old = (void *)kn;
	return (void *)CORE_READ(old, parent);
}

/* Copy the kernfs names from kn (a cgroup's node) up to, not including,
 * the hierarchy's root; path[0] is the leaf.  Unused slots are emptied. */
static __always_inline void read_cgroup_path(struct kernfs_node *kn,
					     char (*path)[CGROUP_NAME_MAX_LEN],
					     __u8 *depth, __u8 *truncated)
{
	__u32 n = 0;

	*truncated = 0;
	for (int i = 0; i < CGROUP_PATH_MAX_DEPTH; i++) {
		if (!kn)
			break;
		struct kernfs_node *parent = kn_parent(kn);
		if (!parent)
			break;		/* kn is the root: not part of the path */
		const char *name = CORE_READ(kn, name);
		if (bpf_probe_read_kernel_str(path[i], CGROUP_NAME_MAX_LEN, name) < 0)
			path[i][0] = 0;
		n++;
		kn = parent;
	}
	if (n == CGROUP_PATH_MAX_DEPTH && kn && kn_parent(kn))
		*truncated = 1;
	for (int i = 0; i < CGROUP_PATH_MAX_DEPTH; i++)
		if (i >= n)
			path[i][0] = 0;
	*depth = n;
}

/* pid, level and inode of the task's own (active) pid namespace:
 * thread_pid->numbers[thread_pid->level]. */
static __always_inline void read_pid_ns(struct task_struct *task, struct exec_event *e)
{
	struct pid *pid = CORE_READ(task, thread_pid);
	unsigned int level = CORE_READ(pid, level);
	struct upid up = {};

	/* a pid namespace nests at most 32 deep (MAX_PID_NS_LEVEL) */
	if (level > 32)
		level = 32;
	bpf_probe_read_kernel(&up, sizeof(up), __builtin_preserve_access_index(&pid->numbers[level]));
	e->ns_pid = up.nr;
	e->pid_ns_level = level;
	e->pid_ns_inum = CORE_READ(up.ns, ns.inum);
}

/* argv as laid out by exec at mm->arg_start..arg_end (user memory). */
static __always_inline void read_args(struct task_struct *task, struct exec_event *e)
{
	struct mm_struct *mm = CORE_READ(task, mm);
	unsigned long start = CORE_READ(mm, arg_start);
	unsigned long end = CORE_READ(mm, arg_end);
	__u64 len = end > start ? end - start : 0;

	e->args_truncated = 0;
	if (len > ARGS_MAX_LEN) {
		len = ARGS_MAX_LEN;
		e->args_truncated = 1;
	}
	if (len && bpf_probe_read_user(e->args, len, (const void *)start) < 0)
		len = 0;
	if (len < ARGS_MAX_LEN)
		e->args[len & (ARGS_MAX_LEN - 1)] = 0;
	e->args_len = len;
}

static __always_inline void read_cgroups(struct task_struct *task, struct exec_event *e)
{
	struct css_set *cset = CORE_READ(task, cgroups);
	struct cgroup *v2 = CORE_READ(cset, dfl_cgrp);
	int id = v1_subsys_id;
	__u32 nr_subsys = bpf_core_field_size(cset->subsys) / sizeof(void *);

	e->cgroup_id = bpf_get_current_cgroup_id();
	read_cgroup_path(CORE_READ(v2, kn), e->cgroup_v2_path,
			 &e->cgroup_v2_depth, &e->cgroup_v2_truncated);

	e->v1_subsys_id = id;
	e->v1_cgroup_id = 0;
	if (id < 0 || id >= nr_subsys || id >= 64) {
		e->cgroup_v1_depth = 0;
		e->cgroup_v1_truncated = 0;
		e->cgroup_v1_path[0][0] = 0;
		return;
	}
	struct cgroup_subsys_state *css = NULL;
	CORE_READ_INTO(&css, &cset->subsys[id & 63]);
	struct cgroup *v1 = CORE_READ(css, cgroup);
	struct kernfs_node *kn = CORE_READ(v1, kn);
	e->v1_cgroup_id = CORE_READ(kn, id);
	read_cgroup_path(kn, e->cgroup_v1_path, &e->cgroup_v1_depth, &e->cgroup_v1_truncated);
}

SEC("tp/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u64 uid_gid = bpf_get_current_uid_gid();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u32 zero = 0;

	if (!uid_wanted((__u32)uid_gid))
		return 0;
	union event_scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct exec_event *e = &s->exec;
	struct task_struct *task = (void *)bpf_get_current_task();

	e->type = EVENT_EXEC;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->time_ns = bpf_ktime_get_ns();
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->ppid = CORE_READ(CORE_READ(task, real_parent), tgid);
	read_pid_ns(task, e);

	struct nsproxy *nsp = CORE_READ(task, nsproxy);
	e->mnt_ns_inum = CORE_READ(CORE_READ(nsp, mnt_ns), ns.inum);
	e->cgroup_ns_inum = CORE_READ(CORE_READ(nsp, cgroup_ns), ns.inum);

	bpf_get_current_comm(e->comm, sizeof(e->comm));
	__u32 loc = ctx->__data_loc_filename;
	long n = bpf_probe_read_kernel_str(e->filename, sizeof(e->filename),
					   (void *)ctx + (loc & 0xffff));
	if (n <= 0) {
		e->filename[0] = 0;
		n = 1;
	}
	e->filename_len = n - 1;
	read_args(task, e);
	read_cgroups(task, e);

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	return 0;
}

SEC("tp/sched/sched_process_exit")
int handle_exit(void *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct exit_event e = {};

	if ((pid_tgid >> 32) != (__u32)pid_tgid)
		return 0;	/* a thread, not the process */
	if (!uid_wanted((__u32)bpf_get_current_uid_gid()))
		return 0;
	struct task_struct *task = (void *)bpf_get_current_task();

	e.type = EVENT_EXIT;
	e.pid = pid_tgid >> 32;
	e.time_ns = bpf_ktime_get_ns();
	e.ppid = CORE_READ(CORE_READ(task, real_parent), tgid);
	e.exit_code = CORE_READ(task, exit_code);
	e.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e.comm, sizeof(e.comm));
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}

/* raw tracepoint: args[0] = parent task, args[1] = child task */
SEC("raw_tp/sched_process_fork")
int handle_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct fork_event e = {};

	if (!want_forks)
		return 0;
	struct task_struct *child = (void *)ctx->args[1];
	int child_pid = CORE_READ(child, tgid);

	if (child_pid != CORE_READ(child, pid))
		return 0;	/* a new thread */
	if (!uid_wanted((__u32)bpf_get_current_uid_gid()))
		return 0;
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	e.type = EVENT_FORK;
	e.parent_pid = pid_tgid >> 32;
	e.parent_tid = (__u32)pid_tgid;
	e.time_ns = bpf_ktime_get_ns();
	e.child_pid = child_pid;
	e.cgroup_id = bpf_get_current_cgroup_id();
	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, &e, sizeof(e));
	return 0;
}
