/* core_kernel.bpf.c - reads task_struct fields through CO-RE, declared with
 * our own minimal (and deliberately mis-laid-out) copies of the kernel's
 * types, so every offset must come from relocating against the running
 * kernel's BTF.  tests/test_core_kernel.py relocates it with pybpfload and
 * compares with the kernel's BTF (bpftool's raw dump) and with libbpf
 * (bpftool -d prog loadall).  kernfs_node's parent is "__parent" since 6.15
 * and "parent" before: both flavours are declared and the access guarded.
 */
#include "pybpf.h"

#define __pai __attribute__((preserve_access_index))

struct upid { int nr; void *ns; } __pai;
struct pid { unsigned int level; struct upid numbers[]; } __pai;
struct nsproxy { int count; void *uts_ns; } __pai;
struct kernfs_node;
struct cgroup { struct kernfs_node *kn; } __pai;
struct css_set { struct cgroup *dfl_cgrp; } __pai;
struct kernfs_node___new { struct kernfs_node___new *__parent; const char *name; } __pai;
struct kernfs_node___old { struct kernfs_node___old *parent; const char *name; } __pai;
struct task_struct {
	int tgid;
	unsigned int in_execve : 1;
	struct task_struct *real_parent;
	struct nsproxy *nsproxy;
	struct pid *thread_pid;
	struct css_set *cgroups;
} __pai;
enum cgroup_subsys_id { cpuset_cgrp_id, cpu_cgrp_id, no_such_cgrp_id___local };

char LICENSE[] SEC("license") = "GPL";

/* No maps: the program stays loadable with nothing but the instructions, so
 * the test can load pybpfload's relocation of it straight into the kernel.
 * out[] lives on the stack and is folded into the return value. */

SEC("tracepoint/sched/sched_process_exec")
int read_task(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *parent = CORE_READ(task, real_parent);
	struct pid *pid = CORE_READ(task, thread_pid);
	struct css_set *cgroups = CORE_READ(task, cgroups);
	struct cgroup *cgrp = CORE_READ(cgroups, dfl_cgrp);
	void *kn = CORE_READ(cgrp, kn);
	__u64 out[11] = {};
	__u64 acc = 0;

	out[0] = CORE_READ(task, tgid);
	out[1] = CORE_READ(parent, tgid);
	out[2] = (__u64)CORE_READ(task, nsproxy);
	out[3] = CORE_READ(pid, level);
	out[4] = CORE_READ(pid, numbers[1].nr);
	if (bpf_core_field_exists(((struct kernfs_node___new *)kn)->__parent))
		out[5] = (__u64)CORE_READ((struct kernfs_node___new *)kn, __parent);
	if (bpf_core_field_exists(((struct kernfs_node___old *)kn)->parent))
		out[6] = (__u64)CORE_READ((struct kernfs_node___old *)kn, parent);
	out[7] = CORE_READ_BITFIELD(task, in_execve);
	out[8] = bpf_core_enum_value(enum cgroup_subsys_id, cpu_cgrp_id);
	out[9] = bpf_core_type_size(struct task_struct);
	out[10] = bpf_core_field_offset(task->real_parent);
	for (int i = 0; i < 11; i++)
		acc ^= out[i];
	return acc & 1;
}
