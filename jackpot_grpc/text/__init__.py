"""Plain text for people: one line of a message, aligned tables."""
