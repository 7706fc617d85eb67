"""The ``autoseg`` subcommands: one module each, with ``add_parser(subparsers)`` and ``run(args)``.

The top layer: a command wires the stages together (e.g. ``plan`` = planning, then
preprocessing; ``train`` = training, then validation by evaluation). Modules that
import torch are imported inside the functions that need them, so that
``autoseg --help`` and argument errors answer at once; each such place says so.
"""
