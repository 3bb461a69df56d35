"""The argument check shared by the projector classes and ``ProjectorConfig``."""


def is_int_at_least(value: object, minimum: int = 1) -> bool:
    """Whether ``value`` is an int (not a bool) of at least ``minimum``: a width, a count or a level count."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum
