// SPDX-License-Identifier: GPL-2.0
/*
 * rsttrace: explain TCP resets. Maps, the shared emit/filter path, and the
 * hooks (one header each). Compiled by bcc; see compat.h for how struct
 * offsets arrive without kernel headers.
 */
#include "rsttrace.h"
#include "compat.h"

#ifndef RST_RING_PAGES
#define RST_RING_PAGES 2048
#endif
#ifndef RST_CWAIT_MAX
#define RST_CWAIT_MAX 16384
#endif
#ifndef RST_TRACK_MAX
#define RST_TRACK_MAX 65536
#endif

#ifdef RST_USE_RINGBUF
BPF_RINGBUF_OUTPUT(rst_events, RST_RING_PAGES);
#else
BPF_PERF_OUTPUT(rst_events);
#endif

BPF_PERCPU_ARRAY(rst_stats, u64, RST_STAT_MAX);
BPF_ARRAY(rst_cfg, struct rst_config, 1);
BPF_HASH(rst_pids, u32, u8, 1024);
BPF_HASH(rst_ports, u16, u8, 1024);
BPF_HASH(rst_cgroups, u64, u8, 1024);

/* Sockets with something abnormal already reported: their later events (errors,
 * destruction) pass the filters and mark the end of their life. Only these
 * sockets cost map space; normal connections never enter. */
BPF_TABLE("lru_hash", u64, u64, rst_tracked, RST_TRACK_MAX);

/* Peers of reported sockets, keyed by the peer's own view of the 4-tuple, so
 * that a pid or comm filter also lets through the other end's events. */
struct rst_tuple {
	u8 saddr[16];
	u8 daddr[16];
	u16 sport;
	u16 dport;
};
BPF_TABLE("lru_hash", struct rst_tuple, u8, rst_peers, 4096);
/*
 * Who closed a connection with FIN, kept until a later segment on it draws an
 * RST from the closed side (the pooled keep-alive race: the server closes an
 * idle connection, the client reuses it a moment later). Every close() of an
 * established connection on the host writes it, so it is a direct-mapped
 * cache, not a hash map: the slot is chosen by hashing the connection, and a
 * write is a few stores into an array element, no helper and no lock (an LRU
 * hash update cost ~800 ns per connection, bench/README.md). A newer close
 * that hashes to the same slot replaces an older one: a close is remembered
 * for about RST_CLOSERS_SLOTS / (closes per second) seconds. Keyed by our side
 * of the connection, as the RST's segment shows it.
 */
#ifndef RST_CLOSERS_SLOTS
#define RST_CLOSERS_SLOTS 65536 /* a power of two */
#endif
struct rst_conn {
	u8 saddr[16];
	u8 daddr[16];
	u16 sport;
	u16 dport;
	u32 netns;
};
struct rst_closer {
	struct rst_conn conn;
	u64 ts; /* 0 while being written */
	u32 pid;
	u32 idle_ms;
	char comm[16];
	u64 cgroup;
};
BPF_ARRAY(rst_closers, struct rst_closer, RST_CLOSERS_SLOTS);

/* Processes whose sockets are reported: their signal deaths pass too. */
BPF_TABLE("lru_hash", u32, u8, rst_tgids, 4096);

/* SIGPIPE is generated inside the send before sock_send_length fires for the
 * same call: keep it per thread until the send's result arrives. */
struct rst_sig {
	u64 ts;
	u32 result;
};
BPF_TABLE("lru_hash", u32, struct rst_sig, rst_sigstash, 4096);

/* Sockets a CLOSE_WAIT sweep found overdue (tracer/closewait.py): inode -> since
 * when (ns). Written by user space; the late close takes its entry. */
BPF_HASH(rst_cwait, u64, u64, RST_CWAIT_MAX);

/*
 * Who is `current`? Softirqs (the receive path of loopback, veth and NICs,
 * every TCP timer) run on top of whatever task was interrupted, so an event
 * there must not be pinned on that task. The program's context lives on the
 * stack of the code that fired the hook (raw tracepoint arguments, or a
 * kprobe's pt_regs), and x86-64 runs softirqs on the CPU's IRQ stack: context
 * outside current's task stack is not current's doing. One case stays on the
 * task stack: an interrupt that arrives while the task runs in user mode runs
 * its softirqs right there. Then the user registers at the top of the stack
 * say so: the task entered the kernel through an interrupt (orig_ax -1), not
 * a system call (orig_ax = its number). A task dying of a signal closes its
 * sockets on that same way back to user mode, and stays the actor.
 *
 * This costs nothing until an event is emitted. (The program's own frame
 * cannot be used: tracing programs with a large stack run on a per-CPU
 * private stack since 6.13. A per-CPU flag set from irq:softirq_entry/exit
 * also worked, but two hooks on every softirq cost the host more than the
 * rest of rsttrace on an idle connection: bench/RESULTS.md. PREEMPT_RT
 * kernels are told apart by the task's own softirq count, below.)
 */
#ifndef RST_THREAD_SIZE
#define RST_THREAD_SIZE 16384
#endif
/* SOFTIRQ_OFFSET (include/linux/preempt.h): set while a softirq is served. */
#define RST_SOFTIRQ_OFFSET (1U << 8)

static __always_inline u8 rst_context(void *ctx)
{
	u64 task = bpf_get_current_task();
	u64 stack = RD(task, OFF_TASK_STACK, u64);
	u32 flags;
	/* The verifier forbids arithmetic on the context pointer: read its value
	 * back as a plain number. */
	void *volatile where = ctx;
	u64 at = 0;

#ifdef RST_HAVE_TASK_SOFTIRQ_CNT
	/* PREEMPT_RT: a softirq runs on the stack of the task that raised it
	 * (at local_bh_enable) or in ksoftirqd, never on an IRQ stack; the task
	 * records that it serves one in softirq_disable_cnt ("softirq: Make
	 * softirq control and processing RT aware", 5.12). */
	if (RD_FIELD(task, TASK_SOFTIRQ_CNT) & RST_SOFTIRQ_OFFSET)
		return RST_CTX_IRQ;
#endif
	bpf_probe_read_kernel(&at, sizeof(at), (void *)&where);
	if (!stack || at - stack >= RST_THREAD_SIZE)
		return RST_CTX_IRQ;
	flags = RD(task, OFF_TASK_FLAGS, u32);
	if (flags & RST_PF_KTHREAD)
		return RST_CTX_KTHREAD;
#ifdef RST_TASK_REGS
	if (!(flags & RST_PF_EXITING)) {
		u64 regs = stack + RST_TASK_REGS;

		if ((RD(regs, OFF_REGS_CS, u16) & 3) == 3 && RD(regs, OFF_REGS_ORIG_AX, s64) < 0)
			return RST_CTX_IRQ;
	}
#endif
	return RST_CTX_TASK;
}

/*
 * The task's cgroup in the hierarchy that names containers here (cgroup v2, or
 * with -DRST_CGROUP_SUBSYS the cgroup of that v1 controller: hybrid and v1
 * hosts, where runtimes make per-controller cgroups). Its id is its kernfs
 * node's, the cgroup directory's inode number. The names of the cgroup and
 * of its ancestors are kept in rst_cgnames the first time an emitted event
 * carries it, so a container that is gone when user space looks is still
 * named (tracer/cgroups.py).
 */
#define RST_CGNAME_LEN 80
#define RST_CGNAME_UP  4
struct rst_cgname {
	/* the cgroup's name, then its parents', RST_CGNAME_LEN bytes each (one
	 * dimension: bcc's Python side reads two-dimensional arrays wrong) */
	char name[RST_CGNAME_UP * RST_CGNAME_LEN];
};
BPF_TABLE("lru_hash", u64, struct rst_cgname, rst_cgnames, 1024);
/* Never written: the zeroed value a new entry starts from (too big for the stack). */
BPF_ARRAY(rst_cgzero, struct rst_cgname, 1);

static __always_inline u64 rst_task_cgroup_kn(void)
{
#ifdef RST_HAVE_CGROUP_WALK
	u64 task = bpf_get_current_task();
	u64 cset = RD(task, OFF_TASK_CGROUPS, u64);
	u64 cgrp;
#ifdef RST_CGROUP_SUBSYS
	u64 css = cset ? RD(cset, OFF_CSS_SET_SUBSYS + 8 * RST_CGROUP_SUBSYS, u64) : 0;

	cgrp = css ? RD(css, OFF_CSS_CGROUP, u64) : 0;
#else
	cgrp = cset ? RD(cset, OFF_CSS_SET_DFL_CGRP, u64) : 0;
#endif
	return cgrp ? RD(cgrp, OFF_CGROUP_KN, u64) : 0;
#else
	return 0;
#endif
}

static __always_inline u64 rst_task_cgroup(void)
{
#ifdef RST_HAVE_CGROUP_WALK
	u64 kn = rst_task_cgroup_kn();

	return kn ? RD(kn, OFF_KERNFS_NODE_ID, u64) : 0;
#else
	return bpf_get_current_cgroup_id();
#endif
}

/* Keep the names of current's cgroup (id `id`) if they are not kept yet. */
static __always_inline void rst_note_cgroup(u64 id)
{
#ifdef RST_HAVE_CGROUP_WALK
	struct rst_cgname *have = rst_cgnames.lookup(&id), *zero;
	int first = 0;
	u64 kn;

	if (have || !id)
		return;
	zero = rst_cgzero.lookup(&first);
	if (!zero)
		return;
	rst_cgnames.update(&id, zero);
	have = rst_cgnames.lookup(&id);
	kn = rst_task_cgroup_kn();
	if (!have || !kn)
		return;
#pragma unroll
	for (int i = 0; i < RST_CGNAME_UP; i++) {
		u64 name = RD(kn, OFF_KERNFS_NODE_NAME, u64);

		if (name)
			bpf_probe_read_kernel_str(have->name + i * RST_CGNAME_LEN, RST_CGNAME_LEN,
						  (void *)name);
		kn = RD(kn, OFF_KERNFS_NODE_PARENT, u64);
		if (!kn)
			break;
	}
#endif
}

static __always_inline void rst_count(int idx)
{
	u64 *v = rst_stats.lookup(&idx);

	if (v)
		(*v)++;
}

static __always_inline void rst_fill_task(void *ctx, struct rst_event *e)
{
	u64 id = bpf_get_current_pid_tgid();

	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = (u32)id;
	e->ctx = rst_context(ctx);
	e->sig_result = RST_SIG_NONE;
	e->reason = RST_REASON_NONE;
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	e->cgroup = rst_task_cgroup();
}

/* Addresses and ports from the sock_common part, valid for full sockets and
 * for timewait/request minisocks alike. */
static __always_inline void rst_fill_common(struct rst_event *e, const void *sk)
{
	e->skaddr = (u64)sk;
	e->family = RD_FIELD(sk, SKC_FAMILY);
	e->netns = rst_sk_netns(sk);
	e->dport = rst_ntohs(RD(sk, OFF_SKC_DPORT, u16));
	e->sport = RD(sk, OFF_SKC_NUM, u16);
	if (e->family == RST_AF_INET6) {
		bpf_probe_read_kernel(e->saddr, 16, (void *)((u64)sk + OFF_SKC_V6_RCV_SADDR));
		bpf_probe_read_kernel(e->daddr, 16, (void *)((u64)sk + OFF_SKC_V6_DADDR));
	} else {
		bpf_probe_read_kernel(e->saddr, 4, (void *)((u64)sk + OFF_SKC_RCV_SADDR));
		bpf_probe_read_kernel(e->daddr, 4, (void *)((u64)sk + OFF_SKC_DADDR));
	}
}

/* A full TCP socket: also the port from inet_sock (skc_num is already 0 once
 * the socket is unhashed on its way to CLOSE), state, flags and inode. */
static __always_inline void rst_fill_sock(struct rst_event *e, const void *sk)
{
	u64 flags = RD(sk, OFF_SKC_FLAGS, u64);

	rst_fill_common(e, sk);
	e->sport = rst_ntohs(RD(sk, OFF_INET_SPORT, u16));
	e->newstate = RD_FIELD(sk, SKC_STATE);
	if (flags & (1ULL << RST_SOCK_DONE))
		e->flags |= RST_F_FIN;
	if (flags & (1ULL << RST_SOCK_DEAD))
		e->flags |= RST_F_ORPHAN;
	if ((flags & (1ULL << RST_SOCK_LINGER)) && RD(sk, OFF_SK_LINGERTIME, u64) == 0)
		e->flags |= RST_F_LINGER0;
	if (RD(sk, OFF_TCP_LINGER2, int) < 0)
		e->flags |= RST_F_LINGER2;
	e->ino = rst_sk_ino(sk);
}

static __always_inline int rst_is_tcp(const void *sk)
{
#if OFF_SK_PROTOCOL == OFF_SK_TYPE
	/* One word holds both (6.x): one read. */
	u32 w = RD(sk, OFF_SK_PROTOCOL, u32);

	return ((w >> SHIFT_SK_PROTOCOL) & MASK_SK_PROTOCOL) == RST_IPPROTO_TCP &&
	       ((w >> SHIFT_SK_TYPE) & MASK_SK_TYPE) == RST_SOCK_STREAM;
#else
	return RD_FIELD(sk, SK_PROTOCOL) == RST_IPPROTO_TCP &&
	       RD_FIELD(sk, SK_TYPE) == RST_SOCK_STREAM;
#endif
}

static __always_inline void rst_peer_key(struct rst_tuple *k, const struct rst_event *e)
{
	__builtin_memcpy(k->saddr, e->daddr, 16);
	__builtin_memcpy(k->daddr, e->saddr, 16);
	k->sport = e->dport;
	k->dport = e->sport;
}

/*
 * The filters. Socket events: netns and ports are exact. pid/comm can only be
 * judged in task context; interrupt-context events (an RST arriving on
 * loopback runs in the sender's system call) pass and user space decides, and
 * a socket already reported, or the peer of one, passes whatever task touches
 * it. Returns 0 to drop, 1 to emit, 2 to emit an event the pid/comm filter
 * could not judge (it must not make its socket followed).
 */
static __always_inline int rst_pass_where(const struct rst_config *cfg, u32 netns, u16 sport,
					  u16 dport)
{
	if (cfg->netns && netns != cfg->netns)
		return 0;
	if (cfg->want_port && !rst_ports.lookup(&sport) && !rst_ports.lookup(&dport))
		return 0;
	return 1;
}

static __always_inline int rst_pass(const struct rst_event *e)
{
	int zero = 0;
	struct rst_config *cfg = rst_cfg.lookup(&zero);
	struct rst_tuple key = {};

	/*
	 * The programs run from attach on, before user space has written the filters:
	 * drop everything until then, or a filtered trace starts with foreign events.
	 */
	if (!cfg || !cfg->ready)
		return 0;
	if (cfg->netns && e->netns != cfg->netns)
		return 0;
	if (e->family && !rst_pass_where(cfg, e->netns, e->sport, e->dport))
		return 0;
	if (!e->family) {
		/* Process events (exit by a signal, a handled SIGPIPE) matter only
		 * for processes whose calls already failed on a connection. */
		u32 tgid = e->pid;

		return rst_tgids.lookup(&tgid) ? 1 : 0;
	}
	if (!cfg->want_pid && !cfg->want_comm && !cfg->want_cgroup)
		return 1;
	if (e->skaddr) {
		u64 sk = e->skaddr;

		if (rst_tracked.lookup(&sk))
			return 1;
		__builtin_memcpy(key.saddr, e->saddr, 16);
		__builtin_memcpy(key.daddr, e->daddr, 16);
		key.sport = e->sport;
		key.dport = e->dport;
		if (rst_peers.lookup(&key))
			return 1;
		if (e->ctx != RST_CTX_TASK)
			return 2;
	} else {
		u32 tgid = e->pid;

		if (rst_tgids.lookup(&tgid))
			return 1;
	}
	if (cfg->want_pid) {
		u32 tgid = e->pid;

		if (!rst_pids.lookup(&tgid))
			return 0;
	}
	if (cfg->want_cgroup) {
		u64 cg = e->cgroup;

		if (!rst_cgroups.lookup(&cg))
			return 0;
	}
	if (cfg->want_comm) {
		for (int i = 0; i < 16; i++) {
			if (e->comm[i] != cfg->comm[i])
				return 0;
			if (!e->comm[i])
				break;
		}
	}
	return 1;
}

/* Filter, remember the socket (and its peer and owner) as followed, send. */
static __always_inline void rst_emit(void *ctx, struct rst_event *e)
{
	u8 one = 1;
	int pass = rst_pass(e);

	if (!pass) {
		rst_count(RST_STAT_FILTERED);
		return;
	}
	if (pass == 1 && e->skaddr && !(e->flags & RST_F_NOSK)) {
		u64 sk = e->skaddr, ts = e->ts_ns;
		struct rst_tuple key = {};

		rst_tracked.update(&sk, &ts);
		rst_peer_key(&key, e);
		rst_peers.update(&key, &one);
	}
	if (e->ctx == RST_CTX_TASK && e->kind != RST_EV_CLOSER)
		rst_note_cgroup(e->cgroup);
	if (pass == 1 && e->ctx == RST_CTX_TASK && e->kind == RST_EV_IO_ERROR) {
		u32 tgid = e->pid;

		rst_tgids.update(&tgid, &one);
	}
#ifdef RST_USE_RINGBUF
	/* No wakeup: the reader drains on a short timer. Waking it costs the
	 * traced workload far more than the event itself (shared/PERF.md). */
	if (rst_events.ringbuf_output(e, sizeof(*e), BPF_RB_NO_WAKEUP) < 0)
		rst_count(RST_STAT_LOST);
	else
		rst_count(RST_STAT_EMITTED);
#else
	if (rst_events.perf_submit(ctx, e, sizeof(*e)) < 0)
		rst_count(RST_STAT_LOST);
	else
		rst_count(RST_STAT_EMITTED);
#endif
}

/*
 * Map access for the hooks. bcc rewrites map method calls only in this file,
 * not in headers it includes, so the hooks go through these.
 */
static __always_inline int rst_is_tracked(u64 sk)
{
	return rst_tracked.lookup(&sk) != NULL;
}

static __always_inline void rst_untrack(u64 sk)
{
	rst_tracked.delete(&sk);
}

static __always_inline void rst_stash_sigpipe(u32 tid, u32 result)
{
	struct rst_sig st = { .ts = bpf_ktime_get_ns(), .result = result };

	rst_sigstash.update(&tid, &st);
}

/* The SIGPIPE result generated by this thread's current send, if any. */
#define RST_SIGPIPE_STALE_NS 5000000000ULL
static __always_inline int rst_take_sigpipe(u32 tid, u64 now)
{
	struct rst_sig *st = rst_sigstash.lookup(&tid);
	int result = -1;

	if (!st)
		return -1;
	/* The same send generated it, however long a loaded host kept the
	 * thread from returning (a 50 ms limit lost fates under load); the
	 * limit only keeps a SIGPIPE from a pipe write, which no TCP send
	 * consumes, from being pinned on a much later send. */
	if (now - st->ts < RST_SIGPIPE_STALE_NS)
		result = st->result;
	rst_sigstash.delete(&tid);
	return result;
}

static __always_inline struct rst_config *rst_config(void)
{
	int zero = 0;

	return rst_cfg.lookup(&zero);
}

static __always_inline void rst_conn_key(struct rst_conn *k, const struct rst_event *e)
{
	__builtin_memcpy(k->saddr, e->saddr, 16);
	__builtin_memcpy(k->daddr, e->daddr, 16);
	k->sport = e->sport;
	k->dport = e->dport;
	k->netns = e->netns;
}

/* A close() that sends FIN: remember who did it and how long the connection
 * had been idle (tcp_mstamp: the last segment sent or received, in us of the
 * monotonic clock, as bpf_ktime_get_ns). Paid by every connection's close, so
 * the start of sock_common (IPv4 addresses, ports, family: one layout since
 * 2.6) is read in one go. */
#define RST_SKC_HEAD		   20
#define RST_SKC_AT(buf, OFF, type) (*(type *)((buf) + (OFF)-OFF_SKC_DADDR))
_Static_assert(OFF_SKC_RCV_SADDR - OFF_SKC_DADDR + 4 <= RST_SKC_HEAD &&
		       OFF_SKC_DPORT - OFF_SKC_DADDR + 2 <= RST_SKC_HEAD &&
		       OFF_SKC_NUM - OFF_SKC_DADDR + 2 <= RST_SKC_HEAD &&
		       OFF_SKC_FAMILY - OFF_SKC_DADDR + 4 <= RST_SKC_HEAD &&
		       OFF_SKC_FAMILY >= OFF_SKC_DADDR,
	       "sock_common's head moved");

static __always_inline u32 rst_conn_slot(const struct rst_conn *k)
{
	const u32 *w = (const u32 *)k;
	u32 h = 0x9e3779b9;

	/* The words of the key (40 bytes), mixed as murmur3's finaliser does. */
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*k) / 4); i++) {
		h ^= w[i];
		h *= 0x85ebca6b;
		h ^= h >> 13;
	}
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h & (RST_CLOSERS_SLOTS - 1);
}

static __always_inline void rst_remember_closer(const void *sk)
{
	u8 head[RST_SKC_HEAD];
	struct rst_conn key = {};
	struct rst_closer *c;
	u64 last_us = RD(sk, OFF_TCP_MSTAMP, u64), now;
	u32 slot;
	u16 family;

	bpf_probe_read_kernel(head, sizeof(head), (void *)((u64)sk + OFF_SKC_DADDR));
	family = (RST_SKC_AT(head, OFF_SKC_FAMILY, u32) >> SHIFT_SKC_FAMILY) & MASK_SKC_FAMILY;
	key.dport = rst_ntohs(RST_SKC_AT(head, OFF_SKC_DPORT, u16));
	key.sport = RST_SKC_AT(head, OFF_SKC_NUM, u16);
	if (family == RST_AF_INET6) {
		bpf_probe_read_kernel(key.saddr, 16, (void *)((u64)sk + OFF_SKC_V6_RCV_SADDR));
		bpf_probe_read_kernel(key.daddr, 16, (void *)((u64)sk + OFF_SKC_V6_DADDR));
	} else {
		__builtin_memcpy(key.saddr, head + OFF_SKC_RCV_SADDR - OFF_SKC_DADDR, 4);
		__builtin_memcpy(key.daddr, head, 4);
	}
	key.netns = rst_sk_netns(sk);
	slot = rst_conn_slot(&key);
	c = rst_closers.lookup(&slot);
	if (!c)
		return;
	/* ts is written last and read first and last by the reader (seqlock-like):
	 * a reader never pairs this key with another close's pid. */
	WRITE_ONCE_U64(c->ts, 0);
	c->conn = key;
	c->pid = bpf_get_current_pid_tgid() >> 32;
	now = bpf_ktime_get_ns();
	c->idle_ms = last_us && now / 1000 > last_us ? (now / 1000 - last_us) / 1000 : 0;
	bpf_get_current_comm(&c->comm, sizeof(c->comm));
	c->cgroup = rst_task_cgroup();
	WRITE_ONCE_U64(c->ts, now);
}

/* After an RST `r` on a connection that this host may have closed with FIN:
 * the process that closed it, if the cache still holds that close. `r` is
 * the closed side's passive RST (peer = 0), the RST as the peer received it
 * (peer = 1: kernels before 6.10 report no RST sent from TIME_WAIT), or an RST
 * received by a socket its owner had already closed (peer = 2: the closer is
 * the receiver's owner, flags RST_F_ORPHAN). */
static __always_inline int rst_conn_equal(const struct rst_conn *a, const struct rst_conn *b)
{
	const u32 *x = (const u32 *)a, *y = (const u32 *)b;
	u32 diff = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*a) / 4); i++)
		diff |= x[i] ^ y[i];
	return !diff;
}

static __always_inline void rst_report_closer(void *ctx, const struct rst_event *r, int peer)
{
	struct rst_conn key = {};
	struct rst_closer *c;
	struct rst_event e = {};
	u64 ts;
	u32 slot;

	if (peer == 1) {
		__builtin_memcpy(key.saddr, r->daddr, 16);
		__builtin_memcpy(key.daddr, r->saddr, 16);
		key.sport = r->dport;
		key.dport = r->sport;
		key.netns = r->netns;
	} else {
		rst_conn_key(&key, r);
	}
	slot = rst_conn_slot(&key);
	c = rst_closers.lookup(&slot);
	if (!c)
		return;
	ts = READ_ONCE_U64(c->ts);
	if (!ts || !rst_conn_equal(&c->conn, &key))
		return;
	e.pid = c->pid;
	e.span_ms = c->idle_ms;
	e.cgroup = c->cgroup;
	__builtin_memcpy(e.comm, c->comm, 16);
	if (READ_ONCE_U64(c->ts) != ts)
		return; /* overwritten while we read it */
	e.ts_ns = bpf_ktime_get_ns();
	e.kind = RST_EV_CLOSER;
	e.ctx = RST_CTX_TASK;
	e.sig_result = RST_SIG_NONE;
	e.reason = RST_REASON_NONE;
	e.aux = (e.ts_ns - ts) / 1000000;
	e.family = r->family;
	e.netns = key.netns;
	e.sport = key.sport;
	e.dport = key.dport;
	/* Which RST asked: the closed side's (passive, its socket's state) or the
	 * peer's receipt of it (its state: CLOSE_WAIT). */
	e.flags = RST_F_NOSK | (peer == 0 ? RST_F_PASSIVE : 0) | (peer == 2 ? RST_F_ORPHAN : 0);
	e.newstate = r->newstate;
	__builtin_memcpy(e.saddr, key.saddr, 16);
	__builtin_memcpy(e.daddr, key.daddr, 16);
	rst_emit(ctx, &e);
}

/* When the sweep found this socket overdue (0: it did not); forgets it. */
static __always_inline u64 rst_cwait_take(u64 ino)
{
	u64 *found = rst_cwait.lookup(&ino);
	u64 since;

	if (!found)
		return 0;
	since = *found;
	rst_cwait.delete(&ino);
	return since;
}

#include "hooks/cwait.h"

#ifdef RST_PLAN_KPROBE
/*
 * The kprobe plan (hooks/kprobe.h): the thread that is inside tcp_close() and
 * the socket it closes. sock:inet_sock_set_state leaves a close() that aborts
 * to tcp_send_active_reset(), which reports it (with the state it left) just
 * before the reset. No kretprobe clears an entry: the next tcp_close() of the
 * thread overwrites it, and an entry older than RST_CLOSING_NS is stale.
 */
#define RST_CLOSING_NS 1000000000ULL
struct rst_closing {
	u64 sk;
	u64 ts;
	u32 oldstate;
	u32 pending; /* set_state left a CLOSE for tcp_send_active_reset */
};
BPF_TABLE("lru_hash", u32, struct rst_closing, rst_closing, 4096);

static __always_inline void rst_kp_close_begin(u64 sk, u32 state)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct rst_closing c = { .sk = sk, .ts = bpf_ktime_get_ns(), .oldstate = state };

	rst_closing.update(&tid, &c);
}

static __always_inline struct rst_closing *rst_kp_closing(u64 sk)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct rst_closing *c = rst_closing.lookup(&tid);

	if (!c || c->sk != sk || bpf_ktime_get_ns() - c->ts > RST_CLOSING_NS)
		return NULL;
	return c;
}

/* Called by set_state for a move to CLOSE it would report as a culprit's
 * close: 1 when this thread is closing that socket, which kprobe.h reports. */
static __always_inline int rst_kp_defer_close(u64 sk, u32 oldstate)
{
	struct rst_closing *c = rst_kp_closing(sk);

	if (!c)
		return 0;
	c->oldstate = oldstate;
	c->pending = 1;
	return 1;
}

static __always_inline void rst_kp_close_done(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();

	rst_closing.delete(&tid);
}
#endif

#include "hooks/state.h"
#include "hooks/reset.h"
#include "hooks/io.h"
#include "hooks/signal.h"
#ifdef RST_BENCH_SYNTH
#include "hooks/bench.h"
#endif
#ifdef RST_PLAN_KPROBE
#include "hooks/kprobe.h"
#endif
#ifdef RST_SYSEXIT_IO
#include "hooks/sysexit.h"
#endif
