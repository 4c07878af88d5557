/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The fate of SIGPIPE. signal:signal_generate runs in the writer's own send
 * (sk_stream_error -> send_sig): stash its result for io.h. A delivered
 * SIGPIPE either reaches a handler (signal:signal_deliver with sig 13) or,
 * with the default action, kills the whole group at generation time, which
 * shows at sched:sched_process_exit as exit_code 13.
 */

RAW_TRACEPOINT_PROBE(signal_generate)
{
	int sig = (int)ctx->args[0];
	u64 task = ctx->args[2];

	if (sig != RST_SIGPIPE)
		return 0;
	rst_stash_sigpipe(RD(task, OFF_TASK_PID, u32), (u32)ctx->args[4]);
	return 0;
}

RAW_TRACEPOINT_PROBE(signal_deliver)
{
	int sig = (int)ctx->args[0];
	u64 ka = ctx->args[2];
	struct rst_event e = {};
	u64 handler;

	if (sig != RST_SIGPIPE)
		return 0;
	handler = RD(ka, OFF_KSIGACTION_HANDLER, u64);
	rst_fill_task(ctx, &e);
	e.kind = RST_EV_SIG_HANDLED;
	e.aux = (u32)handler;
	e.netns = rst_task_netns(bpf_get_current_task());
	rst_emit(ctx, &e);
	return 0;
}

RAW_TRACEPOINT_PROBE(sched_process_exit)
{
	u64 task = bpf_get_current_task();
	u64 id = bpf_get_current_pid_tgid();
	int code = RD(task, OFF_TASK_EXIT_CODE, int);
	struct rst_event e = {};

	/* Only a group's last word, and only a death by signal. */
	if ((u32)id != (id >> 32) || !(code & 0x7f))
		return 0;
	rst_fill_task(ctx, &e);
	e.kind = RST_EV_EXIT;
	e.err = code;
	e.aux = code & 0x7f;
	e.ctx = RST_CTX_TASK;
	e.netns = rst_task_netns(task);
	rst_emit(ctx, &e);
	return 0;
}
