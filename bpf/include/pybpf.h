/* pybpf.h - what a BPF program of this project needs besides the kernel's
 * types: integer types, SEC() and map-definition macros, helper declarations
 * (by their stable helper numbers, from the kernel's UAPI), and the CO-RE
 * builtins wrapped in readable macros.  Written for this project so that
 * building bpf/ needs clang and nothing else (no libbpf headers).
 */
#ifndef PYBPF_H
#define PYBPF_H

/* -DUSE_VMLINUX_H: the kernel's own types from a generated vmlinux.h
 * (make vmlinux, or bpftool btf dump ... format c) instead of kernel_types.h;
 * it has the integer types and the kernel's BPF enums already. */
#ifdef USE_VMLINUX_H
#include "vmlinux.h"
#define PYBPF_NO_BASIC_TYPES
#define NULL ((void *)0)
#endif

#ifndef PYBPF_NO_BASIC_TYPES
typedef unsigned char __u8;
typedef signed char __s8;
typedef unsigned short __u16;
typedef short __s16;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;
typedef __u8 u8;
typedef __s8 s8;
typedef __u16 u16;
typedef __s16 s16;
typedef __u32 u32;
typedef __s32 s32;
typedef __u64 u64;
typedef __s64 s64;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)
#endif

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))
#define __noinline __attribute__((noinline))
#define __weak __attribute__((weak))
#define __hidden __attribute__((visibility("hidden")))
#define __kconfig __attribute__((section(".kconfig")))

/* BTF-defined maps */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]
#define __ulong(name, val) enum { ___bpf_concat(__unique_value, __COUNTER__) = val } name

#ifndef USE_VMLINUX_H
enum {
	BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2, BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4, BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6, BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LRU_PERCPU_HASH = 10, BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_HASH_OF_MAPS = 13, BPF_MAP_TYPE_RINGBUF = 27,
};
enum { LIBBPF_PIN_NONE = 0, LIBBPF_PIN_BY_NAME = 1 };
enum { BPF_ANY = 0, BPF_NOEXIST = 1, BPF_EXIST = 2 };
#endif
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_CURRENT_CPU 0xffffffffULL
#define BPF_F_INDEX_MASK 0xffffffffULL

/* helpers: numbers are the kernel's stable ABI (include/uapi/linux/bpf.h) */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_probe_read)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)4;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static long (*bpf_trace_printk)(const char *fmt, __u32 fmt_size, ...) = (void *)6;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static long (*bpf_tail_call)(void *ctx, void *prog_array_map, __u32 index) = (void *)12;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;
static long (*bpf_get_current_comm)(void *buf, __u32 size_of_buf) = (void *)16;
static long (*bpf_perf_event_output)(void *ctx, void *map, __u64 flags, void *data, __u64 size) = (void *)25;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static long (*bpf_probe_read_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)45;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static long (*bpf_probe_read_user_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)114;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)115;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static void (*bpf_ringbuf_discard)(void *data, __u64 flags) = (void *)133;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;
static void *(*bpf_get_current_task_btf)(void) = (void *)158;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

/* CO-RE: the compiler records a relocation for each of these */
enum bpf_field_info_kind {
	BPF_FIELD_BYTE_OFFSET = 0, BPF_FIELD_BYTE_SIZE = 1, BPF_FIELD_EXISTS = 2,
	BPF_FIELD_SIGNED = 3, BPF_FIELD_LSHIFT_U64 = 4, BPF_FIELD_RSHIFT_U64 = 5,
};
enum bpf_type_id_kind { BPF_TYPE_ID_LOCAL = 0, BPF_TYPE_ID_TARGET = 1 };
enum bpf_type_info_kind { BPF_TYPE_EXISTS = 0, BPF_TYPE_SIZE = 1, BPF_TYPE_MATCHES = 2 };
enum bpf_enum_value_kind { BPF_ENUMVAL_EXISTS = 0, BPF_ENUMVAL_VALUE = 1 };

#define ___bpf_concat(a, b) a##b

/* Does FIELD (an access expression such as s->a.b) exist in the kernel? */
#define bpf_core_field_exists(field) __builtin_preserve_field_info(field, BPF_FIELD_EXISTS)
#define bpf_core_field_size(field) __builtin_preserve_field_info(field, BPF_FIELD_BYTE_SIZE)
#define bpf_core_field_offset(field) __builtin_preserve_field_info(field, BPF_FIELD_BYTE_OFFSET)
#define bpf_core_type_exists(type) __builtin_preserve_type_info(*(typeof(type) *)0, BPF_TYPE_EXISTS)
#define bpf_core_type_matches(type) __builtin_preserve_type_info(*(typeof(type) *)0, BPF_TYPE_MATCHES)
#define bpf_core_type_size(type) __builtin_preserve_type_info(*(typeof(type) *)0, BPF_TYPE_SIZE)
#define bpf_core_type_id_local(type) __builtin_btf_type_id(*(typeof(type) *)0, BPF_TYPE_ID_LOCAL)
#define bpf_core_type_id_kernel(type) __builtin_btf_type_id(*(typeof(type) *)0, BPF_TYPE_ID_TARGET)
#define bpf_core_enum_value_exists(enum_type, enumerator) \
	__builtin_preserve_enum_value(*(typeof(enum_type) *)enumerator, BPF_ENUMVAL_EXISTS)
#define bpf_core_enum_value(enum_type, enumerator) \
	__builtin_preserve_enum_value(*(typeof(enum_type) *)enumerator, BPF_ENUMVAL_VALUE)

/* Read a kernel field with a CO-RE relocated address: CORE_READ_INTO(&dst, &s->f) */
#define CORE_READ_INTO(dst, src) \
	bpf_probe_read_kernel((dst), sizeof(*(dst)), __builtin_preserve_access_index(src))

/* Read one kernel field by value: x = CORE_READ(task, real_parent); */
#define CORE_READ(ptr, field) ({ \
	typeof(ptr) ___p = (ptr); \
	typeof(___p->field) ___v = {0}; \
	bpf_probe_read_kernel(&___v, sizeof(___v), __builtin_preserve_access_index(&___p->field)); \
	___v; })

/* Read a bitfield of a kernel struct through CO-RE (byte size, shifts). */
#define CORE_READ_BITFIELD(ptr, field) ({ \
	unsigned long long ___val = 0; \
	const void *___p = (const void *)(ptr) + __builtin_preserve_field_info((ptr)->field, BPF_FIELD_BYTE_OFFSET); \
	unsigned int ___sz = __builtin_preserve_field_info((ptr)->field, BPF_FIELD_BYTE_SIZE); \
	switch (___sz) { \
	case 1: { u8 ___t = 0; bpf_probe_read_kernel(&___t, 1, ___p); ___val = ___t; break; } \
	case 2: { u16 ___t = 0; bpf_probe_read_kernel(&___t, 2, ___p); ___val = ___t; break; } \
	case 4: { u32 ___t = 0; bpf_probe_read_kernel(&___t, 4, ___p); ___val = ___t; break; } \
	case 8: { u64 ___t = 0; bpf_probe_read_kernel(&___t, 8, ___p); ___val = ___t; break; } \
	} \
	___val <<= __builtin_preserve_field_info((ptr)->field, BPF_FIELD_LSHIFT_U64); \
	if (__builtin_preserve_field_info((ptr)->field, BPF_FIELD_SIGNED)) \
		___val = ((long long)___val) >> __builtin_preserve_field_info((ptr)->field, BPF_FIELD_RSHIFT_U64); \
	else \
		___val = ___val >> __builtin_preserve_field_info((ptr)->field, BPF_FIELD_RSHIFT_U64); \
	___val; })

#endif /* PYBPF_H */
