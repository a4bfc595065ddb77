"""Who may call, and on what terms: what a secret must be like, the reserved client names,
refusing to run open beyond this machine, and throttling callers that keep failing
authentication. The per-call checks (interceptors) live in entrypoints/auth.py."""
