"""The one exception type the CLI turns into a single line on stderr and a non-zero exit."""


class BtcliError(Exception):
    """A problem the user can fix; its message is one line saying what and how."""

    exit_code = 2


class Interrupted(BtcliError):
    """A run stopped by SIGINT/SIGTERM after saving a checkpoint."""

    exit_code = 130
