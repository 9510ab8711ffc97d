"""One exception type for every user-facing failure, printed by the CLI as one line."""


class InversaError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""
