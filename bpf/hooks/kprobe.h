/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The kprobe plan (-DRST_PLAN_KPROBE), for kernels that allow kprobes. It
 * emits the same events as the tracepoint plan, from the functions that do
 * the work:
 *   tcp_close              marks the thread as closing that socket;
 *   tcp_send_active_reset  every active RST: reports the close() that
 *                          aborts (RST_EV_CLOSE, left by set_state in
 *                          state.h) and then the reset (RST_EV_SEND_RESET);
 *                          tcp:tcp_send_reset keeps only passive resets;
 *   tcp_v4/v6_send_reset   (-DRST_KP_NOSK) passive RSTs without a full
 *                          socket (TIME_WAIT minisock, no socket), which
 *                          tcp:tcp_send_reset does not report before 6.10.
 * Argument registers come from BTF (tracer/kernel.py): RST_KP_*_OFF is the
 * offset in struct pt_regs of the register holding that argument, so
 * tcp_send_active_reset(sk, gfp) on 6.1 and (sk, gfp, reason) on 6.18 both
 * work. Context (task/irq) comes from where pt_regs lies, as elsewhere.
 */

/* bcc makes a function a program only in the main file or when a macro
 * declares it (RAW_TRACEPOINT_PROBE works in headers for that reason). */
#define RST_KPROBE(name) int name(struct pt_regs *ctx)

#define RST_KARG(ctx, OFF) (*(u64 *)((char *)(ctx) + (OFF)))

#define RST_TCPHDR_FLAGS 13 /* byte of the TCP header with RST/SYN/FIN */
#define RST_TCPHDR_RST	 0x04

RST_KPROBE(rst_kp_tcp_close)
{
	const void *sk = (const void *)RST_KARG(ctx, RST_KP_CLOSE_SK_OFF);

	rst_kp_close_begin((u64)sk, RD_FIELD(sk, SKC_STATE));
	return 0;
}

RST_KPROBE(rst_kp_send_active_reset)
{
	const void *sk = (const void *)RST_KARG(ctx, RST_KP_AR_SK_OFF);
	struct rst_closing *c = rst_kp_closing((u64)sk);
	struct rst_event e = {};

	if (c && c->pending) {
		/* close() gave up on the connection: the CLOSE that set_state
		 * left, computed exactly as there (the receive queue is purged,
		 * rcv_nxt and copied_seq untouched; the lock is held). */
		struct rst_event cl = {};

		rst_fill_close(ctx, &cl, sk, c->oldstate, RST_TCP_CLOSE);
		rst_kp_close_done();
		rst_emit(ctx, &cl);
	}
	rst_fill_task(ctx, &e);
	e.kind = RST_EV_SEND_RESET;
#ifdef RST_KP_AR_REASON_OFF
	e.reason = (u32)RST_KARG(ctx, RST_KP_AR_REASON_OFF);
#endif
	rst_fill_reset_sock(&e, sk);
	rst_emit(ctx, &e);
	return 0;
}

#ifdef RST_KP_NOSK
/* tcp_v4_send_reset / tcp_v6_send_reset: only what tcp:tcp_send_reset misses
 * on this kernel, i.e. no socket or a minisock. The kernel never answers an
 * RST with an RST (it returns at once): skip those too. */
static __always_inline int rst_kp_send_reset_nosk(void *ctx, const void *sk, const void *skb,
						  u32 reason)
{
	struct rst_event e = {};
	u64 head;
	u16 th;

	if (!skb)
		return 0;
	if (sk) {
		u8 state = RD_FIELD(sk, SKC_STATE);

		if (state != RST_TCP_TIME_WAIT && state != RST_TCP_NEW_SYN_RECV)
			return 0; /* full socket: tcp:tcp_send_reset reports it */
	}
	head = RD(skb, OFF_SKB_HEAD, u64);
	th = RD(skb, OFF_SKB_TRANSPORT_HEADER, u16);
	if (RD(head + th, RST_TCPHDR_FLAGS, u8) & RST_TCPHDR_RST)
		return 0;
	rst_fill_task(ctx, &e);
	e.kind = RST_EV_SEND_RESET;
	e.reason = reason;
	e.flags |= RST_F_PASSIVE | RST_F_NOSK;
	if (sk) {
		rst_fill_common(&e, sk);
		e.newstate = RD_FIELD(sk, SKC_STATE);
	} else {
		rst_fill_from_skb(&e, skb);
	}
	rst_emit(ctx, &e);
	rst_report_closer(ctx, &e, 0);
	return 0;
}

RST_KPROBE(rst_kp_v4_send_reset)
{
	u32 reason = RST_REASON_NONE;

#ifdef RST_KP_V4_REASON_OFF
	reason = (u32)RST_KARG(ctx, RST_KP_V4_REASON_OFF);
#endif
	return rst_kp_send_reset_nosk(ctx, (const void *)RST_KARG(ctx, RST_KP_V4_SK_OFF),
				      (const void *)RST_KARG(ctx, RST_KP_V4_SKB_OFF), reason);
}

#ifdef RST_KP_V6_SK_OFF
RST_KPROBE(rst_kp_v6_send_reset)
{
	u32 reason = RST_REASON_NONE;

#ifdef RST_KP_V6_REASON_OFF
	reason = (u32)RST_KARG(ctx, RST_KP_V6_REASON_OFF);
#endif
	return rst_kp_send_reset_nosk(ctx, (const void *)RST_KARG(ctx, RST_KP_V6_SK_OFF),
				      (const void *)RST_KARG(ctx, RST_KP_V6_SKB_OFF), reason);
}
#endif
#endif
