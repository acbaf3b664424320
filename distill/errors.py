"""The one exception type for bad user input, so the CLI can print it as a single clear line."""


class DistillError(ValueError):
    """Invalid distillation input: the message names the bad value and, where useful, what would be valid."""
