"""The one error a setting the process cannot start with raises.

Library code raises ConfigError (a ValueError: the value is wrong) with a message that names
the variable or the option; only the CLI (jackpot_grpc/cli.py) turns it into an exit code.
It lives on its own, below every layer, so that any module that reads a setting can raise it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad setting or start-up input: the message names it and says what is wanted."""
