"""User-facing errors.

Anything a user can get wrong (a config key, a file, an image, a caption, a
checkpoint, a request) raises `UserError` with a one-line message that names the
problem. The `omni-img` command prints it without a traceback and exits with 2.
"""


class UserError(Exception):
    """A problem with the user's input, stated in one line."""
