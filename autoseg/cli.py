"""The ``autoseg`` command line: parse arguments, call the command, report errors in one line.

Errors in the user's input are printed as one line and exit with status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from autoseg import __version__
from autoseg.commands import (
    convert_msd,
    demo,
    ensemble,
    evaluate,
    export,
    jobs,
    keygen,
    listen,
    plan,
    predict,
    serve,
    train,
)
from autoseg.errors import AutosegInputError, DatasetVerificationError
from autoseg.utils.files import os_error_message

#: Subcommands in the order ``autoseg --help`` lists them.
COMMANDS = (plan, train, jobs, predict, demo, ensemble, evaluate, export, keygen, serve, listen, convert_msd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoseg", description="Self-configuring medical image segmentation for CT and MRI.")
    parser.add_argument("--version", action="version", version=f"autoseg {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except DatasetVerificationError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"autoseg {args.command}: {len(error.problems)} problem(s) in the dataset; nothing was written",
              file=sys.stderr)
        return 1
    except AutosegInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # disk full, read-only folder, ... (atomic writes left nothing half-written)
        print(f"error: {os_error_message(error)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
