"""The ``tokunify`` console entry point (``python -m tokunify``, the ``tokunify`` script).

The subcommand table, the parser and the dispatcher live in :mod:`tokunify.core.commands`; this
module is the name the entry point and users import.
"""

from __future__ import annotations

import sys

from tokunify.core.commands import COMMANDS, Command, build_parser, main, parse_command

__all__ = ["COMMANDS", "Command", "build_parser", "main", "parse_command"]

if __name__ == "__main__":
    sys.exit(main())
