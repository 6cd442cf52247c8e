"""Device discovery, benchmarks, workload runtimes and the sandbox (built out by the runtime issue)."""
