"""Device discovery, benchmarks, workload runtimes and the sandbox (the runtime issue)."""
