/* rsttrace scaffold: bcc already carries the BPF uapi as <bcc/bpf.h>. */
#include <bcc/bpf.h>
