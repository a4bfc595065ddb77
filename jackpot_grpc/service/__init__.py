"""Use cases over a unit of work: what the service does, independent of how it is called."""
