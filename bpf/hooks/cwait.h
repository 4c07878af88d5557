/* SPDX-License-Identifier: GPL-2.0 */
/*
 * CLOSE_WAIT: the peer has closed, and the socket waits for its owner to
 * close too. A server that never does leaks sockets (seed 002). Every
 * connection the peer closes first passes through CLOSE_WAIT, so entering it
 * costs only a small map entry (time, inode, netns); user space scans the map
 * for sockets older than the threshold. Leaving CLOSE_WAIT after at least the
 * threshold, the closing task (normally the owner) is reported.
 */

static __always_inline void rst_cwait_enter_sk(const void *sk)
{
	struct rst_config *cfg = rst_config();
	struct rst_cwait cw = {};

	if (!cfg || !cfg->cwait_ms)
		return;
	cw.netns = rst_sk_netns(sk);
	if (cfg->netns && cw.netns != cfg->netns)
		return;
	cw.ts_ns = bpf_ktime_get_ns();
	cw.ino = rst_sk_ino(sk);
	rst_cwait_enter((u64)sk, &cw);
}

static __always_inline void rst_cwait_leave_sk(void *ctx, const void *sk, int newstate)
{
	struct rst_config *cfg = rst_config();
	struct rst_event e = {};
	u64 since = rst_cwait_leave((u64)sk);
	u32 unread;

	if (!cfg || !cfg->cwait_ms)
		return;
	if (!since && cfg->cwait_old) {
		since = rst_cwait_old_leave(rst_sk_ino(sk));
		if (since)
			e.flags |= RST_F_PREEXISTING;
	}
	if (!since)
		return;
	rst_fill_task(&e);
	if (e.ts_ns - since < (u64)cfg->cwait_ms * 1000000ULL)
		return;
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_CWAIT_END;
	e.oldstate = RST_TCP_CLOSE_WAIT;
	e.newstate = newstate;
	e.span_ms = (e.ts_ns - since) / 1000000ULL;
	unread = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	e.bytes = unread ? unread - 1 : 0;	/* the FIN is not data */
	rst_emit(ctx, &e);
}
