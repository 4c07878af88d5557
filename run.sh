#!/bin/sh
# Install everything rsttrace needs on Debian 12 (as root), then run a job:
#   ./run.sh demo    install, then trace the built-in seed scenario
#   ./run.sh test    install, then run the whole test suite (host, then VM: RSTTRACE_VM=0 skips it)
#   ./run.sh bench   install, then run the benchmarks (bench/run; --quick for a short run)
#   ./run.sh setup   install only
#   ./run.sh test-6.1  also install qemu, Debian's 6.1 kernel and virtme-ng, then run the
#                      root suite inside 6.1 (qemu TCG) on the automatic and tracepoint plans
set -eu
cd "$(dirname "$0")"
job=${1:-setup}
[ $# -gt 0 ] && shift

if [ "$(id -u)" -ne 0 ]; then
	echo "run.sh: needs root (apt-get, BPF, network namespaces): sudo ./run.sh $job" >&2
	exit 3
fi

need=""
for pkg in python3-bpfcc python3-venv linux-libc-dev gcc libc6-dev iproute2 kmod iptables; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
	echo "run.sh: installing$need" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
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
		env -u RSTTRACE_VM_RESULTS RSTTRACE_INCIDENT_DUMP="$results/host/incidents" \
			.venv/bin/python -m pytest -ra "$@" || rc=1
		if [ "${RSTTRACE_VM:-1}" != 0 ]; then
			RSTTRACE_VM_RESULTS=$results vagrant/run-suite "$@" || rc=1
			RSTTRACE_VM_RESULTS=$results .venv/bin/python -m pytest -ra tests/vm || rc=1
		fi
		exit $rc ;;
	bench) exec bench/run "$@" ;;
	test-6.1)
		need=""
		for pkg in qemu-system-x86 linux-image-amd64; do
			dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need="$need $pkg"
		done
		if [ -n "$need" ]; then
			echo "run.sh: installing$need" >&2
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
		fi
		[ -x .venv/bin/vng ] || .venv/bin/python -m pip install -q --disable-pip-version-check virtme-ng
		rc=0
		tests/vm/vng-run .venv/bin/python -m pytest -ra -m root tests/integration "$@" || rc=1
		RSTTRACE_TEST_PLAN=tracepoint tests/vm/vng-run .venv/bin/python -m pytest -ra -m root \
			tests/integration/test_live.py tests/integration/test_plans.py "$@" || rc=1
		exit $rc ;;
	*) echo "run.sh: unknown job '$job' (setup, demo, test, test-6.1, bench)" >&2; exit 2 ;;
esac
