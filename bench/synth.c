// SPDX-License-Identifier: MIT
/*
 * synth: drive rsttrace's benchmark-only synthetic event source (bpf/hooks/
 * bench.h) at a steady rate: each prctl(OPTION, GROUPS, SEQ) makes the BPF
 * side emit GROUPS synthetic incidents of 7 events each.
 *
 * Usage: synth OPTION GROUPS RATE SECONDS
 *   RATE is in incidents per second (triggers are paced in 1 ms steps).
 * Prints one JSON object: triggers made, incidents and events requested.
 */
#define _GNU_SOURCE

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	const struct timespec tick = { 0, 1000000 };
	unsigned long option, groups;
	unsigned long long seq = 0, triggers = 0;
	double rate, seconds, t0, t;

	if (argc != 5) {
		fprintf(stderr, "usage: synth OPTION GROUPS RATE SECONDS\n");
		return 2;
	}
	option = strtoul(argv[1], NULL, 0);
	groups = strtoul(argv[2], NULL, 0);
	rate = strtod(argv[3], NULL);
	seconds = strtod(argv[4], NULL);
	if (!groups || groups > 16 || rate <= 0 || seconds <= 0) {
		fprintf(stderr, "synth: GROUPS 1-16, RATE and SECONDS > 0\n");
		return 2;
	}
	t0 = now();
	while ((t = now()) - t0 < seconds) {
		/* Catch up with the schedule, then sleep a tick. */
		while (seq < (t - t0) * rate) {
			if (prctl((int)option, groups, seq, 0, 0) == 0) {
				fprintf(stderr, "synth: prctl option %#lx is known to this kernel\n",
					option);
				return 1;
			}
			seq += groups;
			triggers++;
		}
		nanosleep(&tick, NULL);
	}
	printf("{\"triggers\": %llu, \"incidents\": %llu, \"events\": %llu, \"elapsed_s\": %.6f}\n",
	       triggers, seq, seq * 7, now() - t0);
	return 0;
}
