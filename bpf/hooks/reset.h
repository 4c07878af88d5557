/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tcp:tcp_send_reset (every RST this host sends; before 6.10 only those sent
 * by a full socket) and tcp:tcp_receive_reset (an RST accepted by a socket,
 * fired before the socket is closed, with its state at that moment).
 */

/* Addresses of an RST that has no full socket, from the segment it answers:
 * the segment's destination is our side. */
static __always_inline void rst_fill_from_skb(struct rst_event *e, const void *skb)
{
	u64 head = RD(skb, OFF_SKB_HEAD, u64);
	u16 nh = RD(skb, OFF_SKB_NETWORK_HEADER, u16);
	u16 th = RD(skb, OFF_SKB_TRANSPORT_HEADER, u16);
	u8 ver = RD(head + nh, 0, u8) >> 4;
	u64 dev = RD(skb, OFF_SKB_DEV, u64);

	if (ver == 6) {
		e->family = RST_AF_INET6;
		bpf_probe_read_kernel(e->daddr, 16, (void *)(head + nh + 8));
		bpf_probe_read_kernel(e->saddr, 16, (void *)(head + nh + 24));
	} else {
		e->family = RST_AF_INET;
		bpf_probe_read_kernel(e->daddr, 4, (void *)(head + nh + 12));
		bpf_probe_read_kernel(e->saddr, 4, (void *)(head + nh + 16));
	}
	e->dport = rst_ntohs(RD(head + th, 0, u16));
	e->sport = rst_ntohs(RD(head + th, 2, u16));
	if (dev) {
		u64 net = RD(dev, OFF_NETDEV_NET, u64);

		e->netns = net ? RD(net, OFF_NET_INUM, u32) : 0;
	}
}

/* A full socket at a reset: state, flags, what it still had unread (FIN
 * excluded), its error. Shared with the kprobe plan (kprobe.h). */
static __always_inline void rst_fill_reset_sock(struct rst_event *e, const void *sk)
{
	rst_fill_sock(e, sk);
	e->bytes = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	if ((e->flags & RST_F_FIN) && e->bytes)
		e->bytes--;
	e->err = RD(sk, OFF_SK_ERR, int);
}

RAW_TRACEPOINT_PROBE(tcp_send_reset)
{
	const void *sk = (const void *)ctx->args[0];
	const void *skb = (const void *)ctx->args[1];
	struct rst_event e = {};

#ifdef RST_PLAN_KPROBE
	if (!skb)
		return 0; /* active: kprobe on tcp_send_active_reset (kprobe.h) */
#endif
	rst_fill_task(ctx, &e);
	e.kind = RST_EV_SEND_RESET;
#ifdef RST_HAVE_REASON
	e.reason = (u32)ctx->args[2];
#endif
	if (skb)
		e.flags |= RST_F_PASSIVE;
	if (sk) {
		u8 state = RD_FIELD(sk, SKC_STATE);

		if (state == RST_TCP_TIME_WAIT || state == RST_TCP_NEW_SYN_RECV) {
			/* A minisock: only sock_common is there. */
			rst_fill_common(&e, sk);
			e.newstate = state;
			e.flags |= RST_F_NOSK;
		} else if (state == RST_TCP_LISTEN && skb) {
			/* A listener answers segments of connections it does not
			 * hold (the late segments of a connection whose TIME_WAIT
			 * socket just reset it): the connection is the segment's. */
			rst_fill_from_skb(&e, skb);
			e.netns = rst_sk_netns(sk);
			e.newstate = state;
			e.flags |= RST_F_NOSK;
		} else {
			rst_fill_reset_sock(&e, sk);
		}
	} else if (skb) {
		rst_fill_from_skb(&e, skb);
		e.flags |= RST_F_NOSK;
	}
	rst_emit(ctx, &e);
	/* Answering data on a connection closed here: say who closed it. */
	if (skb && (e.flags & (RST_F_NOSK | RST_F_ORPHAN)))
		rst_report_closer(ctx, &e, 0);
	return 0;
}

RAW_TRACEPOINT_PROBE(tcp_receive_reset)
{
	const void *sk = (const void *)ctx->args[0];
	struct rst_event e = {};

	rst_fill_task(ctx, &e);
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_RECV_RESET;
	e.bytes = RD(sk, OFF_TCP_RCV_NXT, u32) - RD(sk, OFF_TCP_COPIED_SEQ, u32);
	if ((e.flags & RST_F_FIN) && e.bytes)
		e.bytes--;
	/* What the victim was still sending: written, never acknowledged. */
	e.aux = RD(sk, OFF_TCP_WRITE_SEQ, u32) - RD(sk, OFF_TCP_SND_UNA, u32);
	rst_emit(ctx, &e);
	/* The peer had closed (FIN): if it was closed on this host, say who,
	 * also where the kernel reports no RST sent from TIME_WAIT (< 6.10). */
	if (e.newstate == RST_TCP_CLOSE_WAIT)
		rst_report_closer(ctx, &e, 1);
	/* An orphan: its owner closed it before the RST came (and may be gone):
	 * who that was names the side that got the RST. */
	else if (e.flags & RST_F_ORPHAN)
		rst_report_closer(ctx, &e, 2);
	return 0;
}

#ifdef RST_HAVE_ERROR_REPORT
RAW_TRACEPOINT_PROBE(inet_sk_error_report)
{
	const void *sk = (const void *)ctx->args[0];
	struct rst_event e = {};

	/* Reported with the move to CLOSE (its event carries the error), or by the
	 * RST that caused it: only an error on a live socket is news. */
	if (!rst_is_tcp(sk) || RD_FIELD(sk, SKC_STATE) == RST_TCP_CLOSE)
		return 0;
	rst_fill_task(ctx, &e);
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_SK_ERROR;
	e.err = RD(sk, OFF_SK_ERR, int);
	rst_emit(ctx, &e);
	return 0;
}
#endif
