/* kernel_types.h - the few kernel structures the tools' BPF programs read.
 *
 * Only the members we use are declared.  Every struct carries
 * preserve_access_index, so clang records a CO-RE relocation for each access
 * and the loader fixes the offset against the running kernel's BTF: the
 * offsets implied here are irrelevant, the struct and member NAMES and their
 * types are what must match the kernel.
 *
 * Kernel differences handled with "flavours" (a struct named
 * <kernel name>___<suffix>, which CO-RE matches to <kernel name>):
 *   - kernfs_node.__parent (6.15+) was kernfs_node.parent before:
 *     struct kernfs_node___pre615.
 *   - thread_info.status (x86 TS_COMPAT) does not exist on arm64:
 *     test with bpf_core_field_exists() before use.
 * Members that live in anonymous sub-structs in the kernel (mm_struct's
 * arg_start/arg_end, pid's ino) are declared flat; CO-RE finds them by name.
 */
#ifndef PYBPF_KERNEL_TYPES_H
#define PYBPF_KERNEL_TYPES_H

#include "pybpf.h"

#define __core __attribute__((preserve_access_index))

#ifndef USE_VMLINUX_H /* else vmlinux.h (pybpf.h) has the kernel's types */
struct ns_common {
	unsigned int inum;
} __core;

struct pid_namespace {
	unsigned int level;
	struct ns_common ns;
} __core;

struct mnt_namespace {
	struct ns_common ns;
} __core;

struct cgroup_namespace {
	struct ns_common ns;
} __core;

struct nsproxy {
	struct mnt_namespace *mnt_ns;
	struct cgroup_namespace *cgroup_ns;
} __core;

struct upid {
	int nr;
	struct pid_namespace *ns;
} __core;

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __core;

/* 6.15+: the parent link is __parent (RCU-protected, renamed) */
struct kernfs_node {
	struct kernfs_node *__parent;
	const char *name;
	__u64 id;
} __core;

#endif /* !USE_VMLINUX_H */

/* before 6.15: the same link was called parent */
struct kernfs_node___pre615 {
	struct kernfs_node___pre615 *parent;
} __core;

#ifndef USE_VMLINUX_H

struct cgroup {
	struct kernfs_node *kn;
} __core;

struct cgroup_subsys_state {
	struct cgroup *cgroup;
} __core;

struct css_set {
	struct cgroup_subsys_state *subsys[12];
	struct cgroup *dfl_cgrp;
} __core;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
} __core;

/* x86: thread_info is embedded first in task_struct and has status (TS_COMPAT) */
struct thread_info {
	__u32 status;
} __core;

struct task_struct {
	struct thread_info thread_info;
	int pid;
	int tgid;
	int exit_code;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	struct pid *thread_pid;
	struct nsproxy *nsproxy;
	struct css_set *cgroups;
	struct mm_struct *mm;
} __core;

#endif /* !USE_VMLINUX_H */

/* x86's thread_info.status bit for a task inside a 32-bit (ia32) syscall */
#define X86_TS_COMPAT 0x0002

#ifndef USE_VMLINUX_H

/* Raw tracepoint context: the tracepoint's arguments as u64s.
 * For raw_syscalls/sys_enter: args[0] = struct pt_regs *, args[1] = syscall nr. */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

/* Classic tracepoint record of sched/sched_process_exec, through CO-RE
 * as well (tracepoint layouts do change between kernels; this one has
 * been stable, but the loader relocates the ctx offsets against the
 * kernel's trace_event_raw_<event> type anyway). */
struct trace_event_raw_sched_process_exec {
	__u32 __data_loc_filename;	/* low 16 bits: offset in record, high 16: length */
	int pid;
	int old_pid;
} __core;
#endif /* !USE_VMLINUX_H */

#endif /* PYBPF_KERNEL_TYPES_H */
