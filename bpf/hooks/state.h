/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sock:inet_sock_set_state and tcp:tcp_destroy_sock.
 *
 * close() with unread data (__tcp_close: "data was unread") moves the socket
 * to CLOSE just before it sends the RST, and never touches rcv_nxt or
 * copied_seq, so rcv_nxt - copied_seq at that transition is exactly what was
 * thrown away (+1 when a FIN had arrived). The receive queue is already
 * purged at that point; a socket that reaches CLOSE with its queue intact
 * (FIN_WAIT2 -> TIME_WAIT while the owner still drains it, or an RST whose
 * victim can still read what arrived) has lost nothing.
 *
 * Leaves the kernel: a CLOSE with bytes discarded, with zero linger, or with
 * an error (timeout, abort, reset, refused); a close by a task dying of a
 * signal (process killed); a late end of CLOSE_WAIT (cwait.h). Every other
 * transition returns after a few comparisons: normal lifecycles never leave
 * the kernel.
 */

/* The signal a task in a system call is dying of, or 0. do_exit() stores the
 * exit code before exit_files() closes the task's sockets. */
static __always_inline u32 rst_dying_of(u8 ctx)
{
	u64 task = bpf_get_current_task();
	int code;

	if (ctx != RST_CTX_TASK || !(RD(task, OFF_TASK_FLAGS, u32) & RST_PF_EXITING))
		return 0;
	code = RD(task, OFF_TASK_EXIT_CODE, int);
	return code & 0x7f;
}

/* How long the oldest unacknowledged segment has waited, in ms: retrans_stamp
 * is its first transmission (ms, or us on 6.7+ sockets with usec timestamps). */
static __always_inline u32 rst_unanswered_ms(const void *sk)
{
	u32 start = RD(sk, OFF_TCP_RETRANS_STAMP, u32);
	u64 now_us = RD(sk, OFF_TCP_MSTAMP, u64);

	if (!start)
		return 0;
#ifdef RST_HAVE_TCP_USEC_TS
	if (RD_FIELD(sk, TCP_USEC_TS))
		return ((u32)now_us - start) / 1000;
#endif
	return (u32)(now_us / 1000) - start;
}

static __always_inline void rst_fin_close_report(void *ctx, const void *sk, int oldstate,
						 int newstate)
{
	struct rst_event e = {};

	e.ctx = rst_context(ctx);
	if (e.ctx != RST_CTX_TASK)
		return;
	e.aux = rst_dying_of(e.ctx);
	if (!e.aux && (newstate != RST_TCP_FIN_WAIT1 || RD(sk, OFF_TCP_LINGER2, int) >= 0))
		return;
	rst_fill_task(ctx, &e);
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_CLOSE;
	if (e.aux)
		e.flags |= RST_F_EXITING;
	e.oldstate = oldstate;
	e.newstate = newstate;
	rst_emit(ctx, &e);
}

/* A close that sends FIN, reported only when it matters: by a task dying of a
 * signal (process killed), or with TCP_LINGER2 < 0 (it will end in an RST). */
static __always_inline void rst_fin_close(void *ctx, const void *sk, int oldstate, int newstate)
{
	u64 task = bpf_get_current_task();
	u32 tflags = RD(task, OFF_TASK_FLAGS, u32);

	/* The side that closes first (FIN_WAIT1) is the one whose closed socket
	 * may later answer the peer's data with RST: remember who closed it. */
#ifndef RST_NO_CLOSERS
	if (newstate == RST_TCP_FIN_WAIT1 && !(tflags & RST_PF_KTHREAD))
		rst_remember_closer(sk);
#endif
	/* Paid by every connection's close: one or two reads decide, before anything
	 * else. TCP_LINGER2 matters only on the way to FIN_WAIT2. */
	if (!(tflags & RST_PF_EXITING) &&
	    (newstate != RST_TCP_FIN_WAIT1 || RD(sk, OFF_TCP_LINGER2, int) >= 0))
		return;
	if (!rst_is_tcp(sk))
		return;
	rst_fin_close_report(ctx, sk, oldstate, newstate);
}

/*
 * The common case, decided before filling an event: nothing unread, no zero
 * linger, no error, a socket nobody follows. Two sockets per connection reach
 * CLOSE, so this path is paid by every connection on the host
 * (bench/RESULTS.md).
 */
static __always_inline int rst_close_unremarkable(const void *sk, int oldstate)
{
	u64 flags = RD(sk, OFF_SKC_FLAGS, u64);
	u32 unread = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	u32 fin = (flags & (1ULL << RST_SOCK_DONE)) ? 1 : 0;

	if (unread > fin && !RD(sk, OFF_SK_RCVQ_LEN, u32))
		return 0;
	if ((flags & (1ULL << RST_SOCK_LINGER)) && oldstate != RST_TCP_LAST_ACK &&
	    oldstate != RST_TCP_CLOSING && oldstate != RST_TCP_SYN_SENT &&
	    oldstate != RST_TCP_LISTEN && RD(sk, OFF_SK_LINGERTIME, u64) == 0)
		return 0;
	if (RD(sk, OFF_SK_ERR, int))
		return 0;
	return !rst_is_tracked((u64)sk);
}

/* The CLOSE event of sk leaving oldstate, as both plans report it: the bytes
 * discarded, zero linger, the error, a dying closer, and for errors the
 * retransmissions and probes that were left unanswered. */
static __always_inline void rst_fill_close(void *ctx, struct rst_event *e, const void *sk,
					   int oldstate, int newstate)
{
	u32 unread, fin;

	rst_fill_task(ctx, e);
	rst_fill_sock(e, sk);
	unread = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	fin = (e->flags & RST_F_FIN) ? 1 : 0;
	e->bytes = unread > fin ? unread - fin : 0;
	if (e->bytes && RD(sk, OFF_SK_RCVQ_LEN, u32))
		e->bytes = 0;
	e->err = RD(sk, OFF_SK_ERR, int);
	/* A zero-linger socket only aborts from a synchronized state; CLOSE
	 * after LAST_ACK or TIME_WAIT is its normal end. */
	if (oldstate == RST_TCP_LAST_ACK || oldstate == RST_TCP_CLOSING ||
	    oldstate == RST_TCP_SYN_SENT || oldstate == RST_TCP_LISTEN)
		e->flags &= ~RST_F_LINGER0;
	e->aux = rst_dying_of(e->ctx);
	if (e->aux)
		e->flags |= RST_F_EXITING;
	if (e->err) {
		e->retrans = RD_FIELD(sk, ICSK_RETRANSMITS);
		e->probes = RD_FIELD(sk, ICSK_PROBES_OUT);
		e->span_ms = rst_unanswered_ms(sk);
	}
	e->kind = RST_EV_CLOSE;
	e->oldstate = oldstate;
	e->newstate = newstate;
}

/* A move to CLOSE that is not unremarkable (see above). */
static __always_inline void rst_close(void *ctx, const void *sk, int oldstate, int newstate)
{
	struct rst_event e = {};
	u64 skp = (u64)sk;

	rst_fill_close(ctx, &e, sk, oldstate, newstate);
	/* A dying task's normal closes end in CLOSE too (LAST_ACK, FIN_WAIT2 ->
	 * TIME_WAIT); only the abnormal ones matter here. */
	if (!e.bytes && !(e.flags & RST_F_LINGER0) && !e.err && !rst_is_tracked(skp))
		return;
	/* The victim of an RST: tcp_reset() reported it (RECV_RESET) just before
	 * and set this error; the event would add nothing but cost. */
	if (e.err == RST_ECONNRESET || e.err == RST_EPIPE || e.err == RST_ECONNREFUSED)
		return;
#ifdef RST_PLAN_KPROBE
	/* close() that aborts: hooks/kprobe.h reports it with the reset. */
	if (!rst_is_tracked(skp) && rst_kp_defer_close(skp, oldstate))
		return;
#endif
	rst_emit(ctx, &e);
}

/*
 * Every TCP state change of every connection on the host passes here, about
 * ten per connection: each returns after a comparison or two unless it is a
 * move to CLOSE, FIN_WAIT1 or LAST_ACK, or out of CLOSE_WAIT. No event is
 * built (not even zeroed) before something makes it worth sending.
 */
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
	const void *sk = (const void *)ctx->args[0];
	int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];

	if (oldstate == RST_TCP_CLOSE_WAIT)
		rst_cwait_leave_sk(ctx, sk, newstate);
	if (newstate == RST_TCP_FIN_WAIT1 || newstate == RST_TCP_LAST_ACK) {
		rst_fin_close(ctx, sk, oldstate, newstate);
		return 0;
	}
	/* Protocol last: other protocols (MPTCP) rarely pass the rest. */
	if (newstate != RST_TCP_CLOSE || rst_close_unremarkable(sk, oldstate) || !rst_is_tcp(sk))
		return 0;
	rst_close(ctx, sk, oldstate, newstate);
	return 0;
}

static __always_inline void rst_destroyed(void *ctx, const void *sk)
{
	struct rst_event e = {};

	rst_fill_task(ctx, &e);
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_DESTROY;
	/* What the owner left unread: 0 when it read everything before closing. */
	e.bytes = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	if ((e.flags & RST_F_FIN) && e.bytes)
		e.bytes--;
	rst_emit(ctx, &e);
	rst_untrack((u64)sk);
}

RAW_TRACEPOINT_PROBE(tcp_destroy_sock)
{
	const void *sk = (const void *)ctx->args[0];

	if (rst_is_tracked((u64)sk))
		rst_destroyed(ctx, sk);
	return 0;
}
