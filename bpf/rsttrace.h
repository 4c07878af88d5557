/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The one definition of what the BPF programs send to user space.
 *
 * tracer/layout.py parses this file to build the Python decoder, so keep to
 * its subset: `#define NAME NUMBER` constants and one struct whose fields are
 * fixed-width integers (or fixed-size arrays of them), one per line.
 * tests/unit/test_layout.py compiles it with the C compiler and fails when
 * the two sides disagree.
 */
#ifndef RSTTRACE_H
#define RSTTRACE_H

/* Event kinds (rst_event.kind). */
#define RST_EV_CLOSE	     1 /* socket -> CLOSE with unread bytes or zero linger */
#define RST_EV_SEND_RESET    2 /* an RST left this host */
#define RST_EV_RECV_RESET    3 /* an RST was accepted by a socket */
#define RST_EV_SK_ERROR	     4 /* the kernel reported sk_err to a socket */
#define RST_EV_IO_ERROR	     5 /* send/recv on a TCP socket returned an error */
#define RST_EV_SIG_HANDLED   6 /* SIGPIPE reached a user handler */
#define RST_EV_EXIT	     7 /* a process ended by a signal */
#define RST_EV_DESTROY	     8 /* a socket rsttrace was following was freed */
/* 9 was RST_EV_CWAIT (values of a CLOSE_WAIT map that no longer exists). */
#define RST_EV_CWAIT_END     10 /* left CLOSE_WAIT after at least the threshold */
/* User space: a CLOSE_WAIT sweep found the socket overdue (pid/comm: its owner, span_ms: its
 * age, bytes: unread); recorded and replayed like the rest. */
#define RST_EV_CWAIT_OVERDUE 12
/* Who closed (FIN) the connection a passive RST answered for: pid/comm/tid of the closer,
 * aux = ms from that close to this RST, span_ms = ms the connection had been idle when it
 * was closed. */
#define RST_EV_CLOSER	     11

/* Execution context (rst_event.ctx): who `current` is. */
#define RST_CTX_TASK	0 /* a user task in a system call: it is the actor */
#define RST_CTX_IRQ	1 /* softirq/interrupt: current is whoever was running */
#define RST_CTX_KTHREAD 2 /* a kernel thread (ksoftirqd, workers) */

/* TCP states (rst_event.oldstate/newstate; include/net/tcp_states.h, stable
 * ABI) and address families (rst_event.family). */
#define RST_TCP_ESTABLISHED  1
#define RST_TCP_SYN_SENT     2
#define RST_TCP_SYN_RECV     3
#define RST_TCP_FIN_WAIT1    4
#define RST_TCP_FIN_WAIT2    5
#define RST_TCP_TIME_WAIT    6
#define RST_TCP_CLOSE	     7
#define RST_TCP_CLOSE_WAIT   8
#define RST_TCP_LAST_ACK     9
#define RST_TCP_LISTEN	     10
#define RST_TCP_CLOSING	     11
#define RST_TCP_NEW_SYN_RECV 12

#define RST_AF_INET  2
#define RST_AF_INET6 10

/* rst_event.flags */
#define RST_F_LINGER0 0x01 /* SO_LINGER {1, 0} set on the socket */
#define RST_F_FIN     0x02 /* a FIN had been received (SOCK_DONE) */
#define RST_F_PASSIVE 0x04 /* send_reset: answering an incoming segment */
#define RST_F_NOSK    0x08 /* send_reset: no full socket (sk NULL or minisock) */
#define RST_F_SEND    0x10 /* io error: on a send */
#define RST_F_ORPHAN  0x20 /* socket already detached from its file (SOCK_DEAD) */
#define RST_F_SIGPIPE 0x40 /* io error: this call generated SIGPIPE */
#define RST_F_EXITING 0x80 /* closed by a task dying of a signal (aux: the signal) */
#define RST_F_PREEXISTING \
	0x100 /* CWAIT_END: in CLOSE_WAIT before tracing started (set by user space) */
#define RST_F_LINGER2 0x200 /* TCP_LINGER2 < 0: no FIN_WAIT2, abort instead */
#define RST_F_NOAGE   0x400 /* CWAIT_OVERDUE: age unknown (there before tracing, no idle time) */

/* rst_event.reason when the kernel gives none (before 6.10). */
#define RST_REASON_NONE 0xffffffff
/* rst_event.sig_result when no SIGPIPE was generated (MSG_NOSIGNAL). */
#define RST_SIG_NONE	255

/* prctl option that makes the benchmark-only synthetic source (hooks/bench.h,
 * built with -DRST_BENCH_SYNTH) emit events; unknown to the kernel. */
#define RST_BENCH_PRCTL 0x52535442

/* Indexes of the stats array. */
#define RST_STAT_EMITTED  0
#define RST_STAT_LOST	  1
#define RST_STAT_FILTERED 2
#define RST_STAT_MAX	  3

/*
 * rst_event.aux by kind: SIG_HANDLED: the handler's low bits; EXIT and a CLOSE
 * with RST_F_EXITING: the signal; RECV_RESET: bytes the victim had written
 * that the peer never acknowledged; CLOSER: ms from the close to the RST.
 */
struct rst_event {
	__u64 ts_ns;   /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 skaddr;  /* struct sock * (0: none) */
	__u64 ino;     /* socket inode number (0: orphaned or unknown) */
	__u32 kind;    /* RST_EV_* */
	__u32 netns;   /* network namespace inode */
	__u32 pid;     /* tgid of current */
	__u32 tid;     /* pid of current */
	__s32 err;     /* errno (sk_err for CLOSE), or exit code for RST_EV_EXIT */
	__u32 reason;  /* enum sk_rst_reason value or RST_REASON_NONE */
	__u32 bytes;   /* unread bytes discarded; RECV_RESET, DESTROY: unread (FIN excluded) */
	__u32 aux;     /* see below */
	__u32 span_ms; /* CLOSE on error: ms the oldest segment waited; CWAIT_END: age */
	__u16 flags;   /* RST_F_* */
	__u16 family;  /* AF_INET / AF_INET6 */
	__u16 sport;   /* local port, host order */
	__u16 dport;   /* remote port, host order */
	__u8 oldstate; /* TCP state before (CLOSE event), else state at the event */
	__u8 newstate;
	__u8 ctx;	 /* RST_CTX_* */
	__u8 sig_result; /* signal_generate result or RST_SIG_NONE */
	__u8 retrans;	 /* icsk_retransmits: unanswered retransmissions */
	__u8 probes;	 /* icsk_probes_out: unanswered keepalive/window probes */
	__u8 pad[2];
	__u8 saddr[16]; /* local address (IPv4 in the first 4 bytes) */
	__u8 daddr[16]; /* remote address */
	char comm[16];	/* comm of current */
	__u32 pad2;
	__u64 cgroup; /* current's cgroup v2 id (task context; CLOSER: the closer's) */
};

/* Filter configuration, array map `rst_cfg` index 0 (written by user space). */
struct rst_config {
	__u32 netns;	   /* 0: any */
	__u32 want_pid;	   /* 1: pids map filters task-context events */
	__u32 want_comm;   /* 1: comm must equal `comm` */
	__u32 want_port;   /* 1: ports map filters socket events */
	__u32 cwait_ms;	   /* CLOSE_WAIT threshold; 0: do not follow CLOSE_WAIT */
	__u32 cwait_known; /* 1: rst_cwait may hold sockets (user space found them overdue) */
	char comm[16];
	__u32 ready;	   /* 0 until user space has written the filters: emit nothing */
	__u32 want_cgroup; /* 1: cgroups map filters task-context events (--cgroup, --container) */
};

#endif /* RSTTRACE_H */
