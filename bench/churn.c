// SPDX-License-Identifier: MIT
/*
 * churn: a loopback TCP connection-churn load generator for rsttrace's
 * benchmarks. One process forks a server; the parent is the client.
 *
 * Every connection: connect, send a 64-byte request whose first byte names
 * how the server must end it, then:
 *   N  normal   the server reads the request, answers 64 bytes and closes;
 *               the client reads the answer and EOF, then closes.
 *   U  unread   the server peeks until the whole request is queued and closes
 *               without reading it: Linux sends RST and discards 64 bytes
 *               (TCPAbortOnClose); the client's read fails with ECONNRESET.
 *   L  linger0  the server reads the request, sets SO_LINGER {1, 0} and
 *               closes: RST (TCPAbortOnData); the client gets ECONNRESET.
 *
 * The mix is deterministic, so a run of N connections has exactly
 * floor(N * (unread + linger0) / 10000) resets, split between the two kinds
 * in the same way (fractions are given in basis points, 1/10000).
 *
 * Usage: churn [-n COUNT] [-d SECONDS] [-r RATE] [-u BP] [-l BP] [-c INFLIGHT]
 *              [-a ADDRS]
 *   -n  stop after COUNT connections        -d  stop starting new ones after SECONDS
 *   -r  start at most RATE connections/s    -u  unread resets, basis points
 *   -l  SO_LINGER {1, 0} resets, bp         -c  connections in flight (default 32)
 *   -a  spread over 127.0.0.1..127.0.0.ADDRS (default 8: fewer TIME_WAIT clashes)
 * At the end it prints one JSON object on stdout.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG_LEN		64
#define MAX_INFLIGHT	4096
#define MAX_EVENTS	256

enum mode { M_NORMAL, M_UNREAD, M_LINGER0, M_COUNT };
static const char mode_char[M_COUNT] = { 'N', 'U', 'L' };
static const char *const mode_name[M_COUNT] = { "normal", "unread", "linger0" };

static void die(const char *what)
{
	fprintf(stderr, "churn: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: churn [-n COUNT] [-d SECONDS] [-r RATE] [-u BP] [-l BP] "
		"[-c INFLIGHT] [-a ADDRS]\n");
	exit(2);
}

static double number(const char *s, double max)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < 0 || v > max)
		usage();
	return v;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Connection i's fate: the resets are spread evenly over the run (i is a
 * reset when floor((i + 1) * r) passes an integer), and the k-th reset is
 * an unread one in the same way.
 */
static enum mode mode_of(long long i, long long unread_bp, long long linger_bp)
{
	long long reset_bp = unread_bp + linger_bp, k;

	if (!reset_bp || (i + 1) * reset_bp / 10000 == i * reset_bp / 10000)
		return M_NORMAL;
	k = i * reset_bp / 10000;
	if ((k + 1) * unread_bp / reset_bp > k * unread_bp / reset_bp)
		return M_UNREAD;
	return M_LINGER0;
}

/* -- server ------------------------------------------------------------------ */

static void serve(int lfd, int stop_fd, int report_fd)
{
	static const struct linger abort_now = { 1, 0 };
	long long done[M_COUNT] = { 0 }, bad = 0;
	struct epoll_event evs[MAX_EVENTS], ev;
	char buf[MSG_LEN];
	int ep, n, i;

	ep = epoll_create1(0);
	if (ep < 0)
		die("epoll_create1");
	ev.events = EPOLLIN;
	ev.data.fd = lfd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
		die("epoll_ctl");
	ev.data.fd = stop_fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd, &ev) < 0)
		die("epoll_ctl");
	for (;;) {
		n = epoll_wait(ep, evs, MAX_EVENTS, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			ssize_t got;

			if (fd == stop_fd) {
				dprintf(report_fd, "%lld %lld %lld %lld\n", done[M_NORMAL],
					done[M_UNREAD], done[M_LINGER0], bad);
				exit(0);
			}
			if (fd == lfd) {
				int c;

				while ((c = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					ev.events = EPOLLIN;
					ev.data.fd = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
						die("epoll_ctl");
				}
				if (errno != EAGAIN && errno != ECONNABORTED)
					die("accept4");
				continue;
			}
			/* Peek: an unread request must still be queued at close. */
			got = recv(fd, buf, MSG_LEN, MSG_PEEK);
			if (got < 0 && errno == EAGAIN)
				continue;
			if (got < MSG_LEN && got > 0)
				continue;	/* the rest is on its way */
			if (got <= 0) {
				bad++;
				close(fd);
				continue;
			}
			switch (buf[0]) {
			case 'U':
				done[M_UNREAD]++;
				break;
			case 'L':
				if (recv(fd, buf, MSG_LEN, 0) != MSG_LEN)
					die("recv");
				if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &abort_now,
					       sizeof(abort_now)) < 0)
					die("setsockopt(SO_LINGER)");
				done[M_LINGER0]++;
				break;
			default:
				if (recv(fd, buf, MSG_LEN, 0) != MSG_LEN)
					die("recv");
				if (send(fd, buf, MSG_LEN, MSG_NOSIGNAL) != MSG_LEN)
					bad++;
				else
					done[M_NORMAL]++;
			}
			close(fd);
		}
	}
}

/* -- client ------------------------------------------------------------------ */

struct conn {
	int fd;
	enum mode mode;
	int got;	/* answer bytes read */
};

struct client {
	long long count, started, finished, unread_bp, linger_bp;
	long long done[M_COUNT], resets_seen, unexpected, connect_errors;
	double deadline, rate, t0;
	int ep, naddrs, inflight;
	unsigned short port;
	struct conn conns[MAX_INFLIGHT];
};

static int want_more(struct client *c, double t)
{
	if (c->count && c->started >= c->count)
		return 0;
	if (c->deadline && t >= c->deadline)
		return 0;
	if (c->rate && c->started >= (t - c->t0) * c->rate)
		return 0;
	return 1;
}

static void start_one(struct client *c, struct conn *k)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct epoll_event ev;
	int fd;

	sin.sin_port = htons(c->port);
	sin.sin_addr.s_addr = htonl(0x7f000001 + (unsigned)(c->started % c->naddrs));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		die("socket");
	k->fd = fd;
	k->mode = mode_of(c->started, c->unread_bp, c->linger_bp);
	k->got = 0;
	c->started++;
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS)
		die("connect");
	ev.events = EPOLLOUT;
	ev.data.ptr = k;
	if (epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
}

static void end_one(struct client *c, struct conn *k, int outcome_ok)
{
	close(k->fd);
	k->fd = -1;
	c->finished++;
	if (outcome_ok)
		c->done[k->mode]++;
	else
		c->unexpected++;
}

static void step(struct client *c, struct conn *k, unsigned events)
{
	char buf[MSG_LEN];
	struct epoll_event ev;
	ssize_t n;
	int err = 0;
	socklen_t len = sizeof(err);

	if (events & EPOLLOUT) {
		getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			c->connect_errors++;
			close(k->fd);
			k->fd = -1;
			c->finished++;
			return;
		}
		memset(buf, 'x', sizeof(buf));
		buf[0] = mode_char[k->mode];
		if (send(k->fd, buf, MSG_LEN, MSG_NOSIGNAL) != MSG_LEN)
			die("send");
		ev.events = EPOLLIN;
		ev.data.ptr = k;
		if (epoll_ctl(c->ep, EPOLL_CTL_MOD, k->fd, &ev) < 0)
			die("epoll_ctl");
		return;
	}
	for (;;) {
		n = recv(k->fd, buf, sizeof(buf), 0);
		if (n > 0) {
			k->got += n;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			return;
		break;
	}
	if (n < 0 && errno == ECONNRESET) {
		c->resets_seen++;
		end_one(c, k, k->mode != M_NORMAL && k->got == 0);
	} else if (n == 0) {
		end_one(c, k, k->mode == M_NORMAL && k->got == MSG_LEN);
	} else {
		end_one(c, k, 0);
	}
}

static void run_client(struct client *c)
{
	struct epoll_event evs[MAX_EVENTS];
	int free_slots[MAX_INFLIGHT], nfree = 0, i, n;

	for (i = c->inflight - 1; i >= 0; i--) {
		c->conns[i].fd = -1;
		free_slots[nfree++] = i;
	}
	for (;;) {
		double t = now();
		int timeout = -1;

		while (nfree && want_more(c, t))
			start_one(c, &c->conns[free_slots[--nfree]]);
		if (nfree == c->inflight && !want_more(c, t)) {
			/* Nothing in flight: finished, or paced. */
			if ((c->count && c->started >= c->count) ||
			    (c->deadline && t >= c->deadline))
				return;
		}
		if (c->rate && nfree)
			timeout = 1;
		else if (c->deadline && nfree)
			timeout = (int)((c->deadline - t) * 1000) + 1;
		n = epoll_wait(c->ep, evs, MAX_EVENTS, timeout);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (i = 0; i < n; i++) {
			struct conn *k = evs[i].data.ptr;

			step(c, k, evs[i].events);
			if (k->fd < 0)
				free_slots[nfree++] = (int)(k - c->conns);
		}
	}
}

int main(int argc, char **argv)
{
	static struct client c;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t len = sizeof(sin);
	long long server[M_COUNT + 1];
	int lfd, stop[2], report[2], opt, one = 1, status, m;
	double duration = 0, t_end;
	pid_t child;
	FILE *rep;

	c.inflight = 32;
	c.naddrs = 8;
	while ((opt = getopt(argc, argv, "n:d:r:u:l:c:a:")) != -1) {
		switch (opt) {
		case 'n': c.count = (long long)number(optarg, 1e12); break;
		case 'd': duration = number(optarg, 1e6); break;
		case 'r': c.rate = number(optarg, 1e7); break;
		case 'u': c.unread_bp = (long long)number(optarg, 10000); break;
		case 'l': c.linger_bp = (long long)number(optarg, 10000); break;
		case 'c': c.inflight = (int)number(optarg, MAX_INFLIGHT); break;
		case 'a': c.naddrs = (int)number(optarg, 255); break;
		default: usage();
		}
	}
	if (optind != argc || (!c.count && !duration) || c.inflight < 1 || c.naddrs < 1 ||
	    c.unread_bp + c.linger_bp > 10000)
		usage();

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (lfd < 0)
		die("socket");
	if (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt(SO_REUSEADDR)");
	sin.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		die("bind");
	if (listen(lfd, 4096) < 0)
		die("listen");
	if (getsockname(lfd, (struct sockaddr *)&sin, &len) < 0)
		die("getsockname");
	c.port = ntohs(sin.sin_port);
	if (pipe(stop) < 0 || pipe(report) < 0)
		die("pipe");
	fflush(stdout);
	child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		close(stop[1]);
		close(report[0]);
		serve(lfd, stop[0], report[1]);
	}
	close(lfd);
	close(stop[0]);
	close(report[1]);

	c.ep = epoll_create1(0);
	if (c.ep < 0)
		die("epoll_create1");
	c.t0 = now();
	if (duration)
		c.deadline = c.t0 + duration;
	run_client(&c);
	t_end = now();

	/* Every connection has ended on our side, so the server has closed each. */
	if (write(stop[1], "x", 1) != 1)
		die("write");
	rep = fdopen(report[0], "r");
	if (!rep || fscanf(rep, "%lld %lld %lld %lld", &server[0], &server[1], &server[2],
			   &server[3]) != 4) {
		fprintf(stderr, "churn: the server did not report\n");
		exit(1);
	}
	if (waitpid(child, &status, 0) < 0)
		die("waitpid");

	printf("{\"connections\": %lld, \"elapsed_s\": %.6f, \"conn_per_s\": %.1f",
	       c.finished, t_end - c.t0, c.finished / (t_end - c.t0));
	for (m = 0; m < M_COUNT; m++)
		printf(", \"%s\": %lld", mode_name[m], c.done[m]);
	printf(", \"resets_seen\": %lld, \"unexpected\": %lld, \"connect_errors\": %lld",
	       c.resets_seen, c.unexpected, c.connect_errors);
	printf(", \"server\": {\"normal\": %lld, \"unread\": %lld, \"linger0\": %lld, \"bad\": %lld}",
	       server[0], server[1], server[2], server[3]);
	printf(", \"client_pid\": %d, \"server_pid\": %d, \"port\": %u}\n",
	       (int)getpid(), (int)child, c.port);
	return 0;
}
