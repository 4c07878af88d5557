/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CLOSE_WAIT: the peer has closed, and the socket waits for its owner to
 * close too. A server that never does leaks sockets (seed 002). Every
 * connection the peer closes first passes through CLOSE_WAIT, so nothing is
 * kept per socket on the way in: user space sweeps the sockets in CLOSE_WAIT
 * with sock_diag (tracer/closewait.py), reports the overdue ones and puts
 * their inodes in rst_cwait. Their close, usually much later, is reported
 * here. While no socket is overdue, leaving CLOSE_WAIT costs one lookup of
 * the configuration.
 */

static __always_inline void rst_cwait_report(void *ctx, const void *sk, int newstate, u64 since)
{
	struct rst_event e = {};
	u32 unread;

	rst_fill_task(ctx, &e);
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_CWAIT_END;
	e.oldstate = RST_TCP_CLOSE_WAIT;
	e.newstate = newstate;
	e.span_ms = e.ts_ns > since ? (e.ts_ns - since) / 1000000ULL : 0;
	unread = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	e.bytes = unread ? unread - 1 : 0; /* the FIN is not data */
	rst_emit(ctx, &e);
}

static __always_inline void rst_cwait_leave_sk(void *ctx, const void *sk, int newstate)
{
	struct rst_config *cfg = rst_config();
	u64 ino, since;

	if (!cfg || !cfg->cwait_known)
		return;
	ino = rst_sk_ino(sk);
	since = ino ? rst_cwait_take(ino) : 0;
	if (since)
		rst_cwait_report(ctx, sk, newstate, since);
}
