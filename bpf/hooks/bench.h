/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Benchmark-only synthetic event source, compiled in with -DRST_BENCH_SYNTH
 * (tracer/probes.py adds it when RSTTRACE_BENCH_SYNTH is set; never in normal
 * use). It measures the consumer's ceiling without the cost of making real
 * resets: prctl(RST_BENCH_PRCTL, groups, seq) from the bench's trigger (an
 * unknown option, so the kernel only fires task:task_prctl_unknown and
 * returns EINVAL) sends `groups` synthetic abort-on-close incidents through
 * the real rst_emit path, each as the 7 events a real one produces on
 * loopback: the culprit's CLOSE with 64 unread bytes and its SEND_RESET, the
 * victim's RECV_RESET, SK_ERROR and read ECONNRESET, then both DESTROYs.
 */

#define RST_BENCH_MAX_GROUPS 16

static __always_inline void rst_bench_sock(struct rst_event *e, u32 kind, u64 seq, int victim)
{
	u16 a = 10000 + (seq % 50000), b = 80;
	u32 hi = (u32)(seq / 50000);

	e->ts_ns = bpf_ktime_get_ns();
	e->kind = kind;
	e->skaddr = 0xffff888800000000ULL + seq * 2 * 4096 + (victim ? 4096 : 0);
	e->family = RST_AF_INET;
	e->newstate = RST_TCP_ESTABLISHED;
	/* 127.<hi>.<hi>.1 <-> 127.0.0.1, so tuples stay unique over a long run. */
	e->saddr[0] = 127;
	e->daddr[0] = 127;
	e->saddr[3] = 1;
	e->daddr[3] = 1;
	if (victim) {
		e->saddr[1] = hi >> 8;
		e->saddr[2] = hi;
		e->sport = a;
		e->dport = b;
	} else {
		e->daddr[1] = hi >> 8;
		e->daddr[2] = hi;
		e->sport = b;
		e->dport = a;
	}
}

RAW_TRACEPOINT_PROBE(task_prctl_unknown)
{
	u64 groups = ctx->args[1], seq = ctx->args[2];
	u32 netns = rst_task_netns(bpf_get_current_task());

	if ((u32)ctx->args[0] != RST_BENCH_PRCTL)
		return 0;
	for (int i = 0; i < RST_BENCH_MAX_GROUPS; i++) {
		struct rst_event e = {};
		u64 s = seq + i;

		if (i >= groups)
			break;
		rst_fill_task(ctx, &e);
		e.ctx = RST_CTX_TASK;
		e.netns = netns;
		rst_bench_sock(&e, RST_EV_CLOSE, s, 0);
		e.oldstate = RST_TCP_ESTABLISHED;
		e.newstate = RST_TCP_CLOSE;
		e.bytes = 64;
		rst_emit(ctx, &e);
		rst_bench_sock(&e, RST_EV_SEND_RESET, s, 0);
		e.bytes = 0;
		rst_emit(ctx, &e);
		rst_bench_sock(&e, RST_EV_RECV_RESET, s, 1);
		e.ctx = RST_CTX_IRQ;
		rst_emit(ctx, &e);
		rst_bench_sock(&e, RST_EV_SK_ERROR, s, 1);
		e.err = 104;
		rst_emit(ctx, &e);
		rst_bench_sock(&e, RST_EV_IO_ERROR, s, 1);
		e.ctx = RST_CTX_TASK;
		rst_emit(ctx, &e);
		e.err = 0;
		rst_bench_sock(&e, RST_EV_DESTROY, s, 0);
		e.newstate = RST_TCP_CLOSE;
		rst_emit(ctx, &e);
		rst_untrack(e.skaddr);
		rst_bench_sock(&e, RST_EV_DESTROY, s, 1);
		e.newstate = RST_TCP_CLOSE;
		rst_emit(ctx, &e);
		rst_untrack(e.skaddr);
	}
	return 0;
}
