"""The ``gridit`` command line: ``parser`` builds the arguments, ``commands`` runs them; ``main`` ties the two.

Bad input ends with one line on stderr and exit code 2.
"""

import os
import sys

from gridit_core.errors import GriditError


def main(argv=None):
    """Run the command; returns the exit code (0, 2 for bad input, 130 when interrupted)."""
    from gridit_core.cli.commands import COMMANDS
    from gridit_core.cli.parser import build_parser

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse has already printed
        return e.code
    try:
        COMMANDS[args.command](args)
    except GriditError as e:
        message = " ".join(str(e).splitlines())
        print(f"gridit {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (gridit study --dry-run | head): not an error of ours
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout at exit; this one takes it)
        return 0
    return 0
