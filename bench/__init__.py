"""rsttrace benchmarks: tracing overhead against bcc tcpstates, ingest ceiling, memory, start-up."""
