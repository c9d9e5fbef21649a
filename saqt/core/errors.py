"""The toolkit's expected failures: a bad argument, input or environment, told in one line.

The command-line apps print a :class:`SaqtError` as one line and exit 2; anything else is a bug and keeps its
traceback. Errors that used to be ValueErrors stay ValueErrors too, for callers that catch those.
"""

from __future__ import annotations


class SaqtError(Exception):
    """An expected failure; the message is one line naming the input at fault and, where it helps, what to do."""


class ConfigError(SaqtError, ValueError):
    """An option, or a combination of options, that cannot work."""


class OutputError(SaqtError):
    """Writing the output failed (disk full, permission denied, ...)."""


class StageError(SaqtError, ValueError):
    """A stage folder that cannot be used as it is: missing, malformed, changed since it was written, or busy."""


class PublishError(SaqtError, ValueError):
    """The labels cannot be published as asked."""


class DatasetError(SaqtError, ValueError):
    """A dataset that cannot be read as asked; one line naming the file and the problem."""
