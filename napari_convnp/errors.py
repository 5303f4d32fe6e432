"""The package's own errors: one root, so a caller catches `ConvNPError` and gets every problem the package
names on purpose (a file it cannot read, a mask or an option that cannot work), never a bug.

Each message is one line that names the file, option or argument and what is wrong with it. The errors are
`ValueError`s as well, so code written before this root existed keeps catching them. Cancellation and signals
are not errors and stay apart (`Cancelled` below, `cli.Interrupted`).
"""


class ConvNPError(ValueError):
    """Any problem the package reports on purpose; the message names what to put right."""


class SceneError(ConvNPError):
    """A scene file or folder that cannot be read or written; the message names the file and the problem."""


class MaskError(ConvNPError):
    """A mask that cannot be used as it is; the message says why."""


class OptionError(ConvNPError):
    """An option value that cannot work; the message names the option."""


class FillError(ConvNPError):
    """Input that cannot be filled as asked; the message names the problem."""


class UsageError(ConvNPError):
    """A command line that argparse cannot take (one line, exit code 2)."""


class Cancelled(Exception):
    """The caller asked to stop (between tiles); not an error: nothing went wrong."""
