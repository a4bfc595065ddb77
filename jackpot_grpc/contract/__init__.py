"""What the gRPC contract fixes beside the generated stubs, for every side that speaks it:
the service's names (read from the descriptors), the group enum each way, and the metadata
the REST gateway adds to a call for the server."""
