"""The REST gateway sidecar: routes read from the proto, forwarded to the service over gRPC.

It reaches the service only through its gRPC port (and /metrics through the health port),
never by importing it. Kept free of imports so that loading one module here does not load
the others.
"""
