// SPDX-License-Identifier: MIT
/*
 * rst_server: accept one TCP connection and close it in a chosen way, so that
 * the kernel answers the peer with a reset (or, for the clean modes, does not).
 *
 * Usage: rst_server PORT [-6] [--mode MODE] [--expect N]
 *
 * MODE says how "close" ends the connection: unread (close with the bytes
 * unread -> RST), readall (read, close -> FIN), linger0 (read, SO_LINGER {1, 0},
 * close -> RST), lingering (shutdown(SHUT_WR), drain to EOF, close), linger2
 * (read, TCP_LINGER2 = -1, close -> RST once the FIN is acked), drain (read to
 * EOF, reply "bye", close: the peer half-closed). hold and readhold never close
 * on their own (the socket stays in CLOSE_WAIT after the peer's FIN, or until
 * the process is killed); readhold reads what arrived first; "close" reads
 * what is queued and closes.
 *
 * Driven line by line by tracer/scenarios.py: it prints "listening PORT
 * pid=PID" and "accepted" ("holding N" in the hold modes), then acts on
 * "close" or "recv" (one recv, "recv RET ERRNO") and exits on "exit" or EOF.
 * PORT 0 lets the kernel pick; the chosen port is printed.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/sockios.h>

enum mode {
	MODE_UNREAD, MODE_READALL, MODE_LINGER0, MODE_LINGERING, MODE_HOLD,
	MODE_READHOLD, MODE_LINGER2, MODE_DRAIN,
};

static const char *const mode_names[] = {
	[MODE_UNREAD] = "unread",
	[MODE_READALL] = "readall",
	[MODE_LINGER0] = "linger0",
	[MODE_LINGERING] = "lingering",
	[MODE_HOLD] = "hold",
	[MODE_READHOLD] = "readhold",
	[MODE_LINGER2] = "linger2",
	[MODE_DRAIN] = "drain",
};

#define EXPECT_TIMEOUT_MS 5000

/* The harness reads our stdout through a pipe: flush every line or it stalls. */
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void die(const char *what)
{
	fprintf(stderr, "rst_server: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: rst_server PORT [-6] [--mode unread|readall|linger0|"
		"lingering|hold|readhold|linger2|drain] [--expect N]\n");
	exit(2);
}

static long number(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0)
		usage();
	return v;
}

static enum mode parse_mode(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
		if (!strcmp(s, mode_names[i]))
			return (enum mode)i;
	usage();
	return MODE_UNREAD;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static int queued(int fd)
{
	int n;

	if (ioctl(fd, SIOCINQ, &n) < 0)
		die("ioctl(SIOCINQ)");
	return n;
}

/*
 * The client's "sent N" only means its send buffer took the data; poll rather
 * than read so that, in unread mode, the bytes stay queued for close().
 */
static void wait_queued(int fd, long expect)
{
	const struct timespec tick = { 0, 1000000 };
	long long deadline = now_ms() + EXPECT_TIMEOUT_MS;

	if (expect < 0)
		return;
	while (queued(fd) < expect) {
		if (now_ms() > deadline) {
			fprintf(stderr, "rst_server: timeout: %d of %ld bytes queued\n",
				queued(fd), expect);
			exit(1);
		}
		nanosleep(&tick, NULL);
	}
}

/* Reads what is queued now, without waiting for more. */
static long read_queued(int fd)
{
	char buf[65536];
	long total = 0;
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
		total += n;
	if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		die("recv");
	return total;
}

/* Reads until the peer's FIN, so close() finds nothing unread. */
static long drain(int fd)
{
	char buf[65536];
	long total = 0;
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0)
		total += n;
	if (n < 0)
		die("read");
	return total;
}

/* Closes the connection the way the mode says; returns -1. */
static int finish(int fd, enum mode mode, long expect)
{
	static const struct linger abort_on_close = { 1, 0 };
	static const int no_fin_wait = -1;

	switch (mode) {
	case MODE_UNREAD:
		wait_queued(fd, expect);
		say("unread %d", queued(fd));
		break;
	case MODE_READALL:
	case MODE_LINGER0:
	case MODE_LINGER2:
		wait_queued(fd, expect);
		say("read %ld", read_queued(fd));
		if (mode == MODE_LINGER0 &&
		    setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_on_close,
			       sizeof(abort_on_close)) < 0)
			die("setsockopt(SO_LINGER)");
		if (mode == MODE_LINGER2 &&
		    setsockopt(fd, IPPROTO_TCP, TCP_LINGER2, &no_fin_wait,
			       sizeof(no_fin_wait)) < 0)
			die("setsockopt(TCP_LINGER2)");
		break;
	case MODE_LINGERING:
		if (shutdown(fd, SHUT_WR) < 0)
			die("shutdown");
		say("shutdown");
		say("drained %ld", drain(fd));
		break;
	case MODE_DRAIN:
		say("drained %ld", drain(fd));
		if (write(fd, "bye\n", 4) != 4)
			die("write");
		break;
	case MODE_HOLD:
	case MODE_READHOLD:
		/* A late close, done properly: nothing left unread, so FIN. */
		say("read %ld", read_queued(fd));
		break;
	}
	close(fd);
	say("closed");
	return -1;
}

/* The hold modes: keep the socket open, having read what arrived (readhold). */
static void hold(int fd, enum mode mode, long expect)
{
	wait_queued(fd, expect);
	if (mode == MODE_READHOLD)
		say("holding %ld", read_queued(fd));
	else
		say("holding %d", queued(fd));
}

static void recv_once(int fd)
{
	char buf[4096];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);

	say("recv %zd errno=%d", n, n < 0 ? errno : 0);
}

static int listen_on(long port, int v6)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	int one = 1;
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (v6) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_addr = in6addr_any;
		sin6->sin6_port = htons((unsigned short)port);
		len = sizeof(*sin6);
	} else {
		sin->sin_family = AF_INET;
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
		sin->sin_port = htons((unsigned short)port);
		len = sizeof(*sin);
	}

	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt(SO_REUSEADDR)");
	/* Keep IPv4 peers off the IPv6 socket: no v4-mapped addresses in traces. */
	if (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
		die("setsockopt(IPV6_V6ONLY)");
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		die("bind");
	if (listen(fd, 1) < 0)
		die("listen");
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		die("getsockname");
	say("listening %d pid=%d",
	    ntohs(v6 ? sin6->sin6_port : sin->sin_port), (int)getpid());
	return fd;
}

int main(int argc, char **argv)
{
	enum mode mode = MODE_UNREAD;
	long expect = -1;
	char cmd[64];
	long port;
	int v6 = 0;
	int lfd, fd;
	int i;

	if (argc < 2)
		usage();
	port = number(argv[1]);
	if (port > 65535)
		usage();
	for (i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "-6"))
			v6 = 1;
		else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
			mode = parse_mode(argv[++i]);
		else if (!strcmp(argv[i], "--expect") && i + 1 < argc)
			expect = number(argv[++i]);
		else
			usage();
	}

	lfd = listen_on(port, v6);
	fd = accept(lfd, NULL, NULL);
	if (fd < 0)
		die("accept");
	close(lfd);
	say("accepted");
	if (mode == MODE_HOLD || mode == MODE_READHOLD)
		hold(fd, mode, expect);

	while (fgets(cmd, sizeof(cmd), stdin)) {
		cmd[strcspn(cmd, "\r\n")] = '\0';
		if (!strcmp(cmd, "exit"))
			break;
		if (!strcmp(cmd, "close") && fd >= 0)
			fd = finish(fd, mode, expect);
		else if (!strcmp(cmd, "recv") && fd >= 0)
			recv_once(fd);
		else
			fprintf(stderr, "rst_server: unexpected command '%s'\n", cmd);
	}
	return 0;
}
