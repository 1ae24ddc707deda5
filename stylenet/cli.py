"""What the command-line entry points share: expected failures end in one line, not a traceback."""

from __future__ import annotations

import contextlib
import sys


@contextlib.contextmanager
def one_line_errors(*kinds: type[BaseException]):
    """Bad input, bad settings or a missing device (ValueError, RuntimeError, OSError unless
    `kinds` says otherwise; our ImageError and ModelFileError are ValueErrors) end the command
    with `error: <message>` on stderr and exit status 1. The messages name the file or setting
    and the fix, which a traceback would bury."""
    expected = kinds or (ValueError, RuntimeError, OSError)
    try:
        yield
    except expected as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
