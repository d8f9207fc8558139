"""Errors a user can cause and fix; the command line reports them in one line with exit status 2."""


class UserError(Exception):
    """A problem with the user's input (override, file, model name, data), with the fix in its message."""


class DataError(UserError):
    """Bad data: a missing or unreadable file, malformed JSON, an annotation pointing nowhere."""


class TrainingDiverged(UserError):
    """Training produced only non-finite losses or gradients for too many steps in a row; the message names the fix."""
