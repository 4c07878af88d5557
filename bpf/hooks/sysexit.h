/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The peer's errors on kernels without sock:sock_send_length/sock_recv_length
 * (before 6.3), -DRST_SYSEXIT_IO: raw_syscalls:sys_exit, in the caller's own
 * context after the call, like those tracepoints. It returns after one
 * comparison unless the call failed with a connection error; then, for the
 * socket calls below only, it finds the socket behind the first argument
 * (task->files->fdt->fd[fd], an S_IFSOCK inode, file->private_data is the
 * struct socket) and reports exactly what io.h reports, SIGPIPE included.
 * Used in both plans: kretprobes on tcp_sendmsg/tcp_recvmsg would cost less
 * per call, but every thread blocked in recv() holds a kretprobe instance,
 * and once they run out returns are missed with nothing in our counters.
 *
 * x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl);
 * tracer/build.py compiles this only on x86_64.
 */

#define RST_NR_READ	0
#define RST_NR_WRITE	1
#define RST_NR_READV	19
#define RST_NR_WRITEV	20
#define RST_NR_SENDFILE 40
#define RST_NR_SENDTO	44
#define RST_NR_RECVFROM 45
#define RST_NR_SENDMSG	46
#define RST_NR_RECVMSG	47
#define RST_NR_RECVMMSG 299
#define RST_NR_SENDMMSG 307

#define RST_S_IFMT   0170000
#define RST_S_IFSOCK 0140000

/* 1 send, 0 receive, -1 not a call on a socket's data. */
static __always_inline int rst_sys_direction(u64 nr)
{
	switch (nr) {
	case RST_NR_WRITE:
	case RST_NR_WRITEV:
	case RST_NR_SENDFILE: /* out_fd, the socket, is its first argument */
	case RST_NR_SENDTO:
	case RST_NR_SENDMSG:
	case RST_NR_SENDMMSG:
		return 1;
	case RST_NR_READ:
	case RST_NR_READV:
	case RST_NR_RECVFROM:
	case RST_NR_RECVMSG:
	case RST_NR_RECVMMSG:
		return 0;
	}
	return -1;
}

/* struct sock of the current task's fd, or NULL if fd is not a socket. */
static __always_inline const void *rst_fd_sock(u64 task, s64 fd)
{
	u64 files = RD(task, OFF_TASK_FILES, u64);
	u64 fdt, file, inode, sock;

	if (!files || fd < 0)
		return NULL;
	fdt = RD(files, OFF_FILES_FDT, u64);
	if (!fdt || fd >= RD(fdt, OFF_FDT_MAX_FDS, u32))
		return NULL;
	file = RD(RD(fdt, OFF_FDT_FD, u64), fd * 8, u64);
	if (!file)
		return NULL;
	inode = RD(file, OFF_FILE_INODE, u64);
	if (!inode || (RD(inode, OFF_INODE_MODE, u16) & RST_S_IFMT) != RST_S_IFSOCK)
		return NULL;
	sock = RD(file, OFF_FILE_PRIVATE_DATA, u64);
	return sock ? (const void *)RD(sock, OFF_SOCKET_SK, u64) : NULL;
}

RAW_TRACEPOINT_PROBE(sys_exit)
{
	s64 ret = (s64)ctx->args[1];
	u64 regs;
	int dir;

	if (ret >= 0 || ret < -4095 || !rst_is_conn_error((int)ret))
		return 0;
	regs = ctx->args[0];
	dir = rst_sys_direction(RD(regs, OFF_REGS_ORIG_AX, u64));
	if (dir < 0)
		return 0;
	return rst_io_error(ctx,
			    rst_fd_sock(bpf_get_current_task(), (int)RD(regs, OFF_REGS_DI, u64)),
			    (int)ret, dir);
}
