/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Reading kernel structures without kernel headers.
 *
 * Every offset comes from the running kernel's BTF: tracer/build.py passes
 * -DOFF_<NAME>=<bytes> (and SHIFT_/MASK_ for small or bit fields) for each
 * name used here. Nothing in this file knows a kernel version; where kernels
 * differ, user space decides and passes a switch. Every switch the C reads,
 * with the kernel change behind it (tests/unit/test_drift.py keeps this list
 * complete):
 *
 * What this kernel has (tracer/kernel.py KernelFeatures):
 *   RST_HAVE_REASON   tcp_send_reset has an `enum sk_rst_reason` argument and
 *                     fires for RSTs without a full socket (6.10, "tcp:
 *                     rstreason: ..." series, "tcp: fully support
 *                     sk reset reasons").
 *   RST_HAVE_IO_TP    sock:sock_send_length/sock_recv_length exist (6.3,
 *                     "net: socket: add tracepoints for send/recv length").
 *   RST_SYSEXIT_IO    before 6.3: the peer's errors from raw_syscalls:sys_exit
 *                     instead (hooks/sysexit.h; x86_64).
 *   RST_HAVE_ERROR_REPORT  sock:inet_sk_error_report exists (5.14, "net:
 *                     add tracepoint for inet_sk_error_report").
 *   RST_HAVE_TCP_USEC_TS   tcp_sock.tcp_usec_ts: retrans_stamp may count us
 *                     (6.7, "tcp: add support for usec resolution in TCP TS
 *                     values").
 *   RST_HAVE_TASK_SOFTIRQ_CNT  task_struct.softirq_disable_cnt: PREEMPT_RT,
 *                     softirqs run in tasks (5.12, "softirq: Make softirq
 *                     control and processing RT aware"; RT mainline in 6.12).
 *   RST_TASK_REGS     where the user pt_regs sit at the top of the task stack
 *                     (x86_64; 16 bytes lower with FRED, 6.9), to tell a
 *                     softirq over user mode from the task (rst_context).
 *   RST_THREAD_SIZE   the task stack's size (16 KiB on x86_64, 32 KiB with
 *                     KASAN).
 *   RST_USE_RINGBUF   BPF ring buffer (5.8) instead of a perf buffer.
 *   RST_HAVE_CGROUP_WALK  the layout to walk task -> css_set -> cgroup ->
 *                     kernfs node (id, name, parent: `__parent` since 6.15,
 *                     "kernfs: Use RCU to access kernfs_node::parent"); else
 *                     bpf_get_current_cgroup_id() and no names.
 *   RST_CGROUP_SUBSYS a cgroup v1 controller's index: containers' cgroups are
 *                     read from that hierarchy (hybrid/v1 hosts), not cgroup
 *                     v2's (tracer/cgroups.py decides from the mounts).
 * The kprobe plan (kernels that allow kprobes; hooks/kprobe.h):
 *   RST_PLAN_KPROBE   hook tcp_close and tcp_send_active_reset.
 *   RST_KP_NOSK       also tcp_v4/v6_send_reset: tcp_send_reset is silent
 *                     for RSTs without a full socket before 6.10.
 *   RST_KP_<FN>_<ARG>_OFF  the pt_regs offset of each argument read, from
 *                     the function's BTF prototype. RST_KP_AR_REASON_OFF,
 *                     RST_KP_V4_REASON_OFF, RST_KP_V6_REASON_OFF: the reset
 *                     functions gained `reason` in 6.10; RST_KP_V6_SK_OFF is
 *                     absent where IPv6 is not built in.
 * Sizes (defaults in rsttrace.bpf.c): RST_RING_PAGES, RST_TRACK_MAX,
 *   RST_CWAIT_MAX, RST_CLOSERS_SLOTS.
 * Bench only, never in normal use: RST_BENCH_SYNTH (the synthetic source,
 *   hooks/bench.h, 6.13's task:task_prctl_unknown), RST_NO_CLOSERS (prices
 *   the closers cache).
 */
#ifndef RST_COMPAT_H
#define RST_COMPAT_H

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

#define RD(base, off, type)                                                              \
	({                                                                               \
		type __v = 0;                                                            \
		bpf_probe_read_kernel(&__v, sizeof(__v), (void *)((u64)(base) + (off))); \
		__v;                                                                     \
	})

/* A field that may be a bitfield or narrower than 32 bits: read the aligned
 * 32-bit word that holds it and extract (little-endian layout). */
#define RD_FIELD(base, NAME) ((RD(base, OFF_##NAME, u32) >> SHIFT_##NAME) & MASK_##NAME)

#define RST_IPPROTO_TCP	 6
#define RST_SOCK_STREAM	 1
#define RST_SIGPIPE	 13
#define RST_EPIPE	 32
#define RST_ECONNRESET	 104
#define RST_ECONNREFUSED 111
#define RST_PF_EXITING	 0x00000004
#define RST_PF_KTHREAD	 0x00200000

/* One access the compiler may neither split, merge nor move past another. */
#define WRITE_ONCE_U64(x, v) (*(volatile u64 *)&(x) = (v))
#define READ_ONCE_U64(x)     (*(volatile u64 *)&(x))

static __always_inline u16 rst_ntohs(u16 v)
{
	return (v >> 8) | (v << 8);
}

static __always_inline u32 rst_sk_netns(const void *sk)
{
	u64 net = RD(sk, OFF_SK_NET, u64);

	return net ? RD(net, OFF_NET_INUM, u32) : 0;
}

static __always_inline u32 rst_task_netns(u64 task)
{
	u64 nsproxy = RD(task, OFF_TASK_NSPROXY, u64);
	u64 net;

	if (!nsproxy)
		return 0;
	net = RD(nsproxy, OFF_NSPROXY_NET, u64);
	return net ? RD(net, OFF_NET_INUM, u32) : 0;
}

/* Inode number of the socket's file: struct socket sits first in socket_alloc,
 * followed by its inode. 0 once the socket is orphaned. */
static __always_inline u64 rst_sk_ino(const void *sk)
{
	u64 sock = RD(sk, OFF_SK_SOCKET, u64);

	if (!sock)
		return 0;
	return RD(sock - OFF_SOCKET_ALLOC_SOCKET + OFF_SOCKET_ALLOC_INODE, OFF_INODE_INO, u64);
}

#endif /* RST_COMPAT_H */
