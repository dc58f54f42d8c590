/* events.h - the records the classify program sends to user space.
 *
 * All three records go through the same perf event array ("events") and
 * start with the same two members, so user space dispatches on `type`
 * before decoding the rest.  User space decodes them through the object's
 * BTF (struct exec_event, struct exit_event, struct fork_event), so member
 * names are the contract; sizes are fixed (no variable-length tail).
 *
 * Strings are NUL-terminated inside their arrays (a string that fills the
 * array was cut).  `args` is NUL-separated argv, args_len bytes are valid.
 * Cgroup paths are kernfs names from the LEAF (index 0) up towards the
 * root, the root itself (an empty name) excluded: a task in
 * /system.slice/docker-<id>.scope has depth 2, path[0] = "docker-<id>.scope",
 * path[1] = "system.slice"; depth 0 = the root cgroup.
 */
#ifndef PYBPF_EVENTS_H
#define PYBPF_EVENTS_H

#define EVENT_EXEC 1
#define EVENT_EXIT 2
#define EVENT_FORK 3

#define TASK_COMM_LEN 16
#define FILENAME_MAX_LEN 256
#define ARGS_MAX_LEN 256
#define CGROUP_PATH_MAX_DEPTH 8
#define CGROUP_NAME_MAX_LEN 128

struct exec_event {
	__u32 type;			/* EVENT_EXEC */
	__u32 pid;			/* host pid (tgid) */
	__u64 time_ns;			/* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 tid;			/* host thread id (== pid after exec) */
	__u32 ppid;			/* host pid of real_parent */
	__u32 ns_pid;			/* pid inside the task's own pid namespace */
	__u32 pid_ns_level;		/* 0 = the initial pid namespace */
	__u32 pid_ns_inum;		/* inode of that pid namespace */
	__u32 mnt_ns_inum;
	__u32 cgroup_ns_inum;
	__u32 uid;
	__u32 gid;
	__u32 v1_subsys_id;		/* the v1 hierarchy used, or 0xffffffff for none */
	__u64 cgroup_id;		/* cgroup v2 id (kernfs id of the v2 cgroup) */
	__u64 v1_cgroup_id;		/* kernfs id of the v1 cgroup, 0 if none */
	__u16 filename_len;		/* bytes in filename, without the NUL */
	__u16 args_len;			/* valid bytes in args (NUL-separated) */
	__u8 args_truncated;		/* 1: argv was longer than ARGS_MAX_LEN */
	__u8 cgroup_v2_depth;		/* names in cgroup_v2_path */
	__u8 cgroup_v2_truncated;	/* 1: deeper than CGROUP_PATH_MAX_DEPTH */
	__u8 cgroup_v1_depth;
	__u8 cgroup_v1_truncated;
	__u8 pad[7];
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_MAX_LEN];
	char args[ARGS_MAX_LEN];
	char cgroup_v2_path[CGROUP_PATH_MAX_DEPTH][CGROUP_NAME_MAX_LEN];
	char cgroup_v1_path[CGROUP_PATH_MAX_DEPTH][CGROUP_NAME_MAX_LEN];
};

/* a thread-group leader exited (the process is gone or going) */
struct exit_event {
	__u32 type;			/* EVENT_EXIT */
	__u32 pid;			/* host pid (tgid) */
	__u64 time_ns;
	__u32 ppid;
	__s32 exit_code;		/* wait(2) status: (code >> 8) & 0xff, signal & 0x7f */
	__u64 cgroup_id;
	char comm[TASK_COMM_LEN];
};

/* a new process was created by fork/vfork/clone without CLONE_THREAD
 * (only with want_forks; new threads are not reported) */
struct fork_event {
	__u32 type;			/* EVENT_FORK */
	__u32 parent_pid;		/* host pid (tgid) of the creator */
	__u64 time_ns;
	__u32 parent_tid;		/* host thread id of the creating thread */
	__u32 child_pid;		/* host pid of the new process */
	__u64 cgroup_id;		/* cgroup v2 id of the creator (the child starts there) */
};

#endif /* PYBPF_EVENTS_H */
