"""Client names with a meaning of their own: no entry of the clients file may take them."""

from __future__ import annotations

ADMIN_CLIENT = "admin"  # the client JACKPOT_ADMIN_TOKEN stands for
ANONYMOUS = "anonymous"  # every caller in open mode (no clients configured)
