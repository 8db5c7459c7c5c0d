"""The one line an error is reported in: the CLI's `attnsweep: error: ...` and the sweep's warnings."""


def first_line(message: object) -> str:
    """The first line of `message` (an exception or a text), surrounding blank lines and spaces left
    out. An exception without a message gives its type's name, so that the line never ends empty."""
    lines = str(message).strip().splitlines()
    if lines:
        return lines[0]
    return type(message).__name__ if isinstance(message, BaseException) else ""
