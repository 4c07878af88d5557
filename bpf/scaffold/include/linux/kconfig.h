/* SPDX-License-Identifier: GPL-2.0 */
/* rsttrace scaffold: bcc force-includes this file. rsttrace's BPF code reads
 * no kernel header, so only the switches bcc's helpers test are set. */
#define CONFIG_BPF_SYSCALL 1
#define CONFIG_BPF_EVENTS 1
#define IS_ENABLED(option) 0
