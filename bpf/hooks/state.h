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
 * victim can still read what arrived) has lost nothing. Every other
 * transition returns after two comparisons: normal lifecycles never leave
 * the kernel.
 */

RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
	const void *sk = (const void *)ctx->args[0];
	int oldstate = (int)ctx->args[1], newstate = (int)ctx->args[2];
	struct rst_event e = {};
	u32 unread, fin;
	u64 skp = (u64)sk;

	if (newstate != RST_TCP_CLOSE)
		return 0;
	if (!rst_is_tcp(sk))
		return 0;
	rst_fill_task(&e);
	rst_fill_sock(&e, sk);
	unread = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	fin = (e.flags & RST_F_FIN) ? 1 : 0;
	e.bytes = unread > fin ? unread - fin : 0;
	if (e.bytes && RD(sk, OFF_SK_RCVQ_LEN, u32))
		e.bytes = 0;
	e.err = RD(sk, OFF_SK_ERR, int);
	/* A zero-linger socket only aborts from a synchronized state; CLOSE
	 * after LAST_ACK or TIME_WAIT is its normal end. */
	if (!(e.flags & RST_F_LINGER0) || oldstate == RST_TCP_LAST_ACK ||
	    oldstate == RST_TCP_CLOSING || oldstate == RST_TCP_SYN_SENT ||
	    oldstate == RST_TCP_LISTEN)
		e.flags &= ~RST_F_LINGER0;
	if (!e.bytes && !(e.flags & RST_F_LINGER0) && !rst_is_tracked(skp))
		return 0;
#ifdef RST_PLAN_KPROBE
	/* close() that aborts: hooks/kprobe.h reports it with the reset. */
	if (!rst_is_tracked(skp) && rst_kp_defer_close(skp, oldstate))
		return 0;
#endif
	e.kind = RST_EV_CLOSE;
	e.oldstate = oldstate;
	e.newstate = newstate;
	rst_emit(ctx, &e);
	return 0;
}

RAW_TRACEPOINT_PROBE(tcp_destroy_sock)
{
	const void *sk = (const void *)ctx->args[0];
	struct rst_event e = {};
	u64 skp = (u64)sk;

	if (!rst_is_tracked(skp))
		return 0;
	rst_fill_task(&e);
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_DESTROY;
	rst_emit(ctx, &e);
	rst_untrack(skp);
	return 0;
}
