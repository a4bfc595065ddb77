"""Background jobs beside the server: the periodic loop and on-demand runs they share, the
ledger audit monitor, the checkpoint signer, and the failover watch."""
