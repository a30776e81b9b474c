"""One exception type for every problem a reader can fix themselves.

Its message is meant to be read by a person: it says what is wrong and what to do.
Labs and the command line print it on one line instead of a deep library traceback.
"""


class CourseError(RuntimeError):
    """A problem with the reader's set-up, data or configuration, with the fix in the message."""


class DataError(CourseError, ValueError):
    """A data file is malformed. The message starts with ``file:line:``."""
