#!/bin/sh
# Install everything rsttrace needs on Debian 12 (as root), then run a job:
#   ./run.sh demo    install, then trace the built-in seed scenario
#   ./run.sh test    install, then run the whole test suite (host, then VM: RSTTRACE_VM=0 skips it)
#   ./run.sh bench   install, then run the benchmarks (bench/run; --quick for a short run)
#   ./run.sh setup   install only
#   ./run.sh service-install  install, then install, enable and start the systemd unit
#                    (packaging/systemd/rsttrace.service: traces in /var/log/rsttrace, metrics on
#                    127.0.0.1:9464; README: Running it on every host)
#   ./run.sh test-6.1  also install qemu and virtme-ng, fetch Debian's 6.1 kernel into a cache
#                      (tests/vm/fetch-kernels), then run the root suite inside 6.1 (qemu TCG)
#                      on the automatic and tracepoint plans
#   ./run.sh test-kernels [--full] [KERNEL...]  the kernel matrix (tests/vm/kernels.toml: 5.10,
#                      6.1, 6.12, 6.12-rt, 7.2 under virtme-ng/TCG, plus the host): per kernel and
#                      plan one traced session playing every scenario (tests/matrix), --full also
#                      the whole root suite; then the comparison and a results table. Not in CI.
set -eu
cd "$(dirname "$0")"
job=${1:-setup}
[ $# -gt 0 ] && shift

if [ "$(id -u)" -ne 0 ]; then
	echo "run.sh: needs root (apt-get, BPF, network namespaces): sudo ./run.sh $job" >&2
	exit 3
fi

need=""
# The second line: the real software of tests/integration/test_corpus.py; prometheus and tmux:
# tests/integration/test_prometheus.py (a real server scrapes `service --metrics`) and test_top.py;
# podman, runc and busybox-static: the two containers of tests/integration/test_containers.py;
# clang-format: the C style check of bpf/ (.clang-format).
for pkg in python3-bpfcc python3-venv linux-libc-dev gcc libc6-dev iproute2 kmod iptables stress-ng clang-format \
	curl haproxy memcached postgresql gunicorn nodejs lighttpd prometheus tmux podman runc busybox-static; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
	echo "run.sh: installing$need" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
	# The corpus tests start their own instances inside namespaces; the system services these
	# packages just started (where systemd runs) are not needed. Only those installed now: a
	# service that was already here is the machine owner's.
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		for svc in haproxy memcached postgresql lighttpd prometheus; do
			case " $need " in *" $svc "*) systemctl disable --now "$svc" >/dev/null 2>&1 || true ;; esac
		done
	fi
fi

# Debian's python3 sees bcc (python3-bpfcc); the venv inherits it.
if [ ! -x .venv/bin/python ]; then
	/usr/bin/python3 -m venv --system-site-packages .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
ln -sf "$(pwd)/.venv/bin/rsttrace" /usr/local/bin/rsttrace

case "$job" in
	setup) echo "run.sh: installed; try: sudo rsttrace demo" >&2 ;;
	demo) exec .venv/bin/rsttrace demo "$@" ;;
	test)
		# Host suite; then the VM suite on Debian 12's 6.1 kernel (vagrant/README.md; RSTTRACE_VM=0
		# skips it); then the comparison of both kernels' incidents. Every part runs; any failure fails.
		results=${RSTTRACE_VM_RESULTS:-$(pwd)/.vm-results}
		rm -rf "$results/host"
		rc=0
		# Style first: ruff (lint and format) for Python, clang-format for the BPF C.
		.venv/bin/ruff check . && .venv/bin/ruff format --check . || rc=1
		clang-format --dry-run -Werror bpf/*.c bpf/*.h bpf/hooks/*.h || rc=1
		env -u RSTTRACE_VM_RESULTS RSTTRACE_INCIDENT_DUMP="$results/host/incidents" \
			.venv/bin/python -m pytest -ra "$@" || rc=1
		if [ "${RSTTRACE_VM:-1}" != 0 ]; then
			# Under emulation a test takes 10-20 s: the VM runs the kernel-bound tests (the
			# kprobe plan also the real-software corpus, and the service under the guest's
			# systemd, which this host lacks), not the kernel-independent ones (readers,
			# metrics, containers, load), which the host suite ran.
			if [ $# -eq 0 ]; then
				k=tests/integration
				set -- -m root $k/test_live.py $k/test_plans.py $k/test_kinds.py $k/test_stories.py \
					$k/test_traces.py $k/test_workloads.py $k/test_corpus.py \
					$k/test_service.py::test_service_under_systemd
				export RSTTRACE_VM_TRACEPOINT_ARGS="${RSTTRACE_VM_TRACEPOINT_ARGS:--m root $k/test_live.py \
					$k/test_plans.py $k/test_kinds.py $k/test_stories.py}"
			fi
			RSTTRACE_VM_RESULTS=$results vagrant/run-suite "$@" || rc=1
			RSTTRACE_VM_RESULTS=$results .venv/bin/python -m pytest -ra tests/vm || rc=1
		fi
		exit $rc ;;
	bench) exec bench/run "$@" ;;
	service-install)
		if [ ! -d /run/systemd/system ]; then
			echo "run.sh: systemd is not running on this host (no /run/systemd/system); run" \
				"'rsttrace service --dir /var/log/rsttrace' under its init system instead" >&2
			exit 1
		fi
		install -m 0644 packaging/systemd/rsttrace.service /etc/systemd/system/rsttrace.service
		install -d -m 0755 /usr/local/share/doc/rsttrace
		install -m 0644 README.md /usr/local/share/doc/rsttrace/README.md
		systemctl daemon-reload
		systemctl enable --now rsttrace.service
		systemctl --no-pager --lines=5 status rsttrace.service ;;
	test-6.1|test-kernels)
		# No kernel is installed: tests/vm/fetch-kernels fetches them into
		# /var/cache/rsttrace-kernels with a private apt configuration (tests/vm/kernels.toml).
		need=""
		for pkg in qemu-system-x86; do
			dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
		done
		if [ -n "$need" ]; then
			echo "run.sh: installing$need" >&2
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
		fi
		[ -x .venv/bin/vng ] || .venv/bin/python -m pip install -q --disable-pip-version-check virtme-ng
		[ "$job" = test-kernels ] && exec tests/vm/run-matrix "$@"
		rc=0
		KERNEL=6.1 tests/vm/vng-run .venv/bin/python -m pytest -ra -m root tests/integration "$@" || rc=1
		KERNEL=6.1 RSTTRACE_TEST_PLAN=tracepoint tests/vm/vng-run .venv/bin/python -m pytest -ra -m root \
			tests/integration/test_live.py tests/integration/test_plans.py "$@" || rc=1
		exit $rc ;;
	*) echo "run.sh: unknown job '$job' (setup, demo, test, test-6.1, test-kernels, bench, service-install)" >&2; exit 2 ;;
esac
