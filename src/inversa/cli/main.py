"""Command line entry point: ``inversa COMMAND``; each module of :mod:`inversa.cli` adds its subcommands."""
from __future__ import annotations

import argparse
import os
import shlex
import sys

from inversa.cli import common
from inversa.cli.checks import arguments
from inversa.core.errors import InversaError



class Parser(argparse.ArgumentParser):
    """Usage errors in the same one-line form as every other error (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"inversa: error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from inversa.cli import bench, edit, interpolate, inversion, serve, train

    parser = Parser(prog="inversa", description="Precise diffusion inversion for diffusers models.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (inversion, bench, train, edit, interpolate, serve):  # each adds its subcommands, ``run=fn(args)``
        module.add_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = "inversa " + shlex.join(argv)  # recorded by commands that write provenance
    common.defer_notes()
    try:
        arguments(args)
        common.quiet()
        code = args.run(args)
        common.print_notes(common.defer_notes(False))
        sys.stdout.flush()  # inside the try: a closed pipe raises here, not at interpreter exit
        return code
    except InversaError as exc:
        print(f"inversa: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("inversa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # the environment refused (a full disk, a read-only mount): one line, no traceback
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"inversa: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    finally:
        common.defer_notes(False)


if __name__ == "__main__":
    sys.exit(main())
