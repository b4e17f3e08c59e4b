"""heaptrace: eBPF memory allocation tracer."""
__version__ = "0.1.0"
