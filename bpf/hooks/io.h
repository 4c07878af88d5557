/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the peer process got: sock:sock_send_length / sock_recv_length fire
 * after every send/recv in the caller's own context with the return value.
 * Only the errors a reset or a dead peer produces leave the kernel.
 */

static __always_inline int rst_is_conn_error(int ret)
{
	switch (-ret) {
	case 32:  /* EPIPE */
	case 103: /* ECONNABORTED */
	case 104: /* ECONNRESET */
	case 110: /* ETIMEDOUT */
	case 111: /* ECONNREFUSED */
	case 113: /* EHOSTUNREACH */
	case 101: /* ENETUNREACH */
		return 1;
	}
	return 0;
}

static __always_inline void rst_io_report(void *ctx, const void *sk, int ret, int is_send)
{
	struct rst_event e = {};

	rst_fill_task(ctx, &e);
	rst_fill_sock(&e, sk);
	e.kind = RST_EV_IO_ERROR;
	e.err = -ret;
	if (is_send) {
		int result = rst_take_sigpipe(e.tid, e.ts_ns);

		e.flags |= RST_F_SEND;
		if (result >= 0) {
			e.sig_result = result;
			e.flags |= RST_F_SIGPIPE;
		}
	}
	rst_emit(ctx, &e);
}

/* Every send and recv on the host passes here: the return value decides. */
static __always_inline int rst_io_error(void *ctx, const void *sk, int ret, int is_send)
{
	if (ret >= 0 || !rst_is_conn_error(ret) || !sk || !rst_is_tcp(sk))
		return 0;
	rst_io_report(ctx, sk, ret, is_send);
	return 0;
}

#ifdef RST_HAVE_IO_TP
RAW_TRACEPOINT_PROBE(sock_send_length)
{
	return rst_io_error(ctx, (const void *)ctx->args[0], (int)ctx->args[1], 1);
}

RAW_TRACEPOINT_PROBE(sock_recv_length)
{
	return rst_io_error(ctx, (const void *)ctx->args[0], (int)ctx->args[1], 0);
}
#endif
