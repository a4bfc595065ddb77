"""HTTP side of the service: the REST gateway (routes read from the proto) and health HTTP.

Kept free of imports so that loading one module here does not load the others.
"""
