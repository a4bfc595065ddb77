"""The life of a service process: its stop signal, start-up garbage collection, child
processes side by side, its cgroup's memory limit and the installed version."""
