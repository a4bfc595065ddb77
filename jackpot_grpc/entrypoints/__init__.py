"""How the service is reached: gRPC servicer, error table, health, server wiring."""
