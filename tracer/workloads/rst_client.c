// SPDX-License-Identifier: MIT
/*
 * rst_client: connect, send some data, then (on "go") write into a connection
 * the peer may have reset, printing each call's result.
 *
 * Usage: rst_client HOST PORT [--send N] [--writes K] [--chunk C]
 *                   [--gap-ms MS] [--sigpipe default|ignore|handle]
 *                   [--nosignal] [--recv] [--shutdown] [--may-fail]
 *                   [--keepalive IDLE,INTVL,CNT] [--user-timeout MS]
 *
 * HOST is an IPv4 or IPv6 address literal.  Driven line by line by
 * tracer/scenarios.py: it prints "connected pid=PID sport=PORT" and "sent N",
 * waits for "go", then prints "write RET ERRNO" per write (or one
 * "recv RET ERRNO" with --recv) and "done". With --shutdown it half-closes
 * after sending and reads to EOF ("eof N") instead of waiting for "go". With
 * --may-fail a failed connect() prints "connect -1 ERRNO" and exits 0.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[65536];

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
	fprintf(stderr, "rst_client: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: rst_client HOST PORT [--send N] [--writes K] "
		"[--chunk C] [--gap-ms MS] [--sigpipe default|ignore|handle] "
		"[--nosignal] [--recv] [--shutdown] [--may-fail] "
		"[--keepalive IDLE,INTVL,CNT] [--user-timeout MS]\n");
	exit(2);
}

static long number(const char *s, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > max)
		usage();
	return v;
}

static const char *errname(int err)
{
	static char other[16];

#define E(name) case name: return #name
	switch (err) {
	case 0:
		return "OK";
	E(ECONNRESET);
	E(EPIPE);
	E(ECONNREFUSED);
	E(ECONNABORTED);
	E(ETIMEDOUT);
	E(EHOSTUNREACH);
	E(ENETUNREACH);
	E(EAGAIN);
	E(EINTR);
	}
#undef E
	snprintf(other, sizeof(other), "E%d", err);
	return other;
}

static void on_sigpipe(int sig)
{
	static const char msg[] = "sigpipe handled\n";
	ssize_t n;

	(void)sig;
	/* Only async-signal-safe calls here, so write(2) rather than stdio. */
	n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
	(void)n;
}

static void set_sigpipe(const char *how)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	/* Set "default" explicitly: an ignored SIGPIPE survives exec from the parent. */
	if (!strcmp(how, "default"))
		sa.sa_handler = SIG_DFL;
	else if (!strcmp(how, "ignore"))
		sa.sa_handler = SIG_IGN;
	else if (!strcmp(how, "handle"))
		sa.sa_handler = on_sigpipe;
	else
		usage();
	if (sigaction(SIGPIPE, &sa, NULL) < 0)
		die("sigaction");
}

struct sockopts {
	int keepalive[3];	/* idle s, interval s, count; 0: off */
	int user_timeout_ms;	/* 0: kernel default */
	int may_fail;
};

static void set_opt(int fd, int level, int name, int value, const char *what)
{
	if (setsockopt(fd, level, name, &value, sizeof(value)) < 0)
		die(what);
}

static void apply(int fd, const struct sockopts *o)
{
	if (o->keepalive[0]) {
		set_opt(fd, SOL_SOCKET, SO_KEEPALIVE, 1, "setsockopt(SO_KEEPALIVE)");
		set_opt(fd, IPPROTO_TCP, TCP_KEEPIDLE, o->keepalive[0], "setsockopt(TCP_KEEPIDLE)");
		set_opt(fd, IPPROTO_TCP, TCP_KEEPINTVL, o->keepalive[1], "setsockopt(TCP_KEEPINTVL)");
		set_opt(fd, IPPROTO_TCP, TCP_KEEPCNT, o->keepalive[2], "setsockopt(TCP_KEEPCNT)");
	}
	if (o->user_timeout_ms)
		set_opt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, o->user_timeout_ms,
			"setsockopt(TCP_USER_TIMEOUT)");
}

static void parse_keepalive(const char *s, struct sockopts *o)
{
	if (sscanf(s, "%d,%d,%d", &o->keepalive[0], &o->keepalive[1], &o->keepalive[2]) != 3 ||
	    o->keepalive[0] < 1 || o->keepalive[1] < 1 || o->keepalive[2] < 1)
		usage();
}

static int connect_to(const char *host, long port, int *sport, const struct sockopts *o)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
	socklen_t len;
	int fd;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons((unsigned short)port);
		len = sizeof(*sin);
	} else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((unsigned short)port);
		len = sizeof(*sin6);
	} else {
		usage();
		return -1;
	}

	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		die("socket");
	apply(fd, o);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		if (!o->may_fail)
			die("connect");
		say("connect -1 %s", errname(errno));
		exit(0);
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		die("getsockname");
	*sport = ntohs(ss.ss_family == AF_INET6 ? sin6->sin6_port : sin->sin_port);
	return fd;
}

static ssize_t put(int fd, size_t len, int nosignal)
{
	return nosignal ? send(fd, buf, len, MSG_NOSIGNAL) : write(fd, buf, len);
}

static void send_all(int fd, long total, int nosignal)
{
	long left = total;
	ssize_t n;

	while (left > 0) {
		n = put(fd, left < (long)sizeof(buf) ? (size_t)left : sizeof(buf), nosignal);
		if (n < 0)
			die("send");
		left -= n;
	}
	say("sent %ld", total);
}

static void wait_for_go(void)
{
	char line[64];

	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!strcmp(line, "go"))
			return;
		fprintf(stderr, "rst_client: unexpected command '%s'\n", line);
	}
	fprintf(stderr, "rst_client: stdin closed before \"go\"\n");
	exit(1);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int main(int argc, char **argv)
{
	const char *sigpipe = "default";
	long total = 1000, writes = 3, chunk = 100, gap_ms = 0, port, i;
	int nosignal = 0, do_recv = 0, half_close = 0;
	struct sockopts opts = { { 0, 0, 0 }, 0, 0 };
	int fd, sport;
	ssize_t n;

	if (argc < 3)
		usage();
	port = number(argv[2], 65535);
	for (i = 3; i < argc; i++) {
		int has_arg = i + 1 < argc;

		if (!strcmp(argv[i], "--send") && has_arg)
			total = number(argv[++i], 1L << 30);
		else if (!strcmp(argv[i], "--writes") && has_arg)
			writes = number(argv[++i], 1000000);
		else if (!strcmp(argv[i], "--chunk") && has_arg)
			chunk = number(argv[++i], sizeof(buf));
		else if (!strcmp(argv[i], "--gap-ms") && has_arg)
			gap_ms = number(argv[++i], 60000);
		else if (!strcmp(argv[i], "--sigpipe") && has_arg)
			sigpipe = argv[++i];
		else if (!strcmp(argv[i], "--nosignal"))
			nosignal = 1;
		else if (!strcmp(argv[i], "--recv"))
			do_recv = 1;
		else if (!strcmp(argv[i], "--shutdown"))
			half_close = 1;
		else if (!strcmp(argv[i], "--may-fail"))
			opts.may_fail = 1;
		else if (!strcmp(argv[i], "--keepalive") && has_arg)
			parse_keepalive(argv[++i], &opts);
		else if (!strcmp(argv[i], "--user-timeout") && has_arg)
			opts.user_timeout_ms = number(argv[++i], 1L << 30);
		else
			usage();
	}
	set_sigpipe(sigpipe);
	memset(buf, 'x', sizeof(buf));

	fd = connect_to(argv[1], port, &sport, &opts);
	say("connected pid=%d sport=%d", (int)getpid(), sport);
	send_all(fd, total, nosignal);
	if (half_close) {
		long got = 0;

		if (shutdown(fd, SHUT_WR) < 0)
			die("shutdown");
		say("shutdown");
		while ((n = read(fd, buf, sizeof(buf))) > 0)
			got += n;
		if (n < 0)
			die("read");
		say("eof %ld", got);
		close(fd);
		say("done");
		return 0;
	}
	wait_for_go();

	if (do_recv) {
		n = recv(fd, buf, sizeof(buf), 0);
		say("recv %zd %s", n, errname(n < 0 ? errno : 0));
		close(fd);
		return 0;
	}
	for (i = 0; i < writes; i++) {
		if (i && gap_ms)
			sleep_ms(gap_ms);
		n = put(fd, (size_t)chunk, nosignal);
		say("write %zd %s", n, errname(n < 0 ? errno : 0));
	}
	close(fd);
	say("done");
	return 0;
}
