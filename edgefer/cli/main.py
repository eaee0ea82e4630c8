"""The ``edgefer`` command line: thin front-ends over library functions.

Only the cli package prints (the library logs). Every ``EdgeferError`` becomes one red line
here, with its exit code; ``--debug`` shows the traceback too, with the same exit code.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from edgefer.errors import EdgeferError


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said here, where the command is known, rather than by the top-level parser
        command = " ".join(filter(None, (args.command, getattr(args, "llm_command", None))))
        parser.exit(2, f"error: unrecognized arguments: {' '.join(unknown)} (see: edgefer "
                       f"{command} --help)\n")
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s",
                        handlers=[CurrentStderrHandler()])
    signal.signal(signal.SIGTERM, _interrupt)  # `live` installs its own, gentler handler
    try:
        return args.run(args)
    except EdgeferError as err:
        if args.debug:
            traceback.print_exc()
        _tell(f"[bold red]error:[/] {_escape(str(err))}")
        return err.exit_code
    except KeyboardInterrupt:
        _tell("[yellow]interrupted[/]")
        return 130
    except Exception as err:  # a bug: say so in one line, keep the traceback for --debug
        if args.debug:
            traceback.print_exc()
        _tell(f"[bold red]internal error:[/] {_escape(type(err).__name__)}: {_escape(str(err))} "
              "(run with --debug for the traceback and please report it)")
        return 70


def _tell(markup: str) -> None:
    """One line on stderr, unbroken (paths stay whole, to copy)."""
    from edgefer.cli.common import make_console

    make_console(stderr=True).print(markup, highlight=False, soft_wrap=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class CurrentStderrHandler(logging.StreamHandler):
    """Writes each record to ``sys.stderr`` as it is then, not as it was at start-up: a progress
    display swaps ``sys.stderr`` for a proxy that prints lines above its bars, so a warning
    logged mid-run stays on screen instead of being drawn over by the next refresh."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)  # not StreamHandler's, which would bind a stream now

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends a command as Ctrl-C does: files are closed, temporary copies deleted."""
    raise KeyboardInterrupt


class OneLineErrorParser(argparse.ArgumentParser):
    """A usage mistake is one line, as every other error here, naming where the usage is;
    subcommands' parsers are of this class too (argparse makes them of their parent's)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # no abbreviations: `--llm` would read as any of the --llm-* flags where --llm is not
        # one (llm calibrate), and a new flag would change what an abbreviation means
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


DEBUG_HELP = "show tracebacks and debug logs (before or after the command)"


def build_parser() -> argparse.ArgumentParser:
    from edgefer import __version__

    parser = OneLineErrorParser(
        prog="edgefer", description="Real-time facial-emotion recognition at the edge, with an "
                                    "asynchronous vision-LLM second opinion.",
        epilog="Exit codes: 0 ok, 1 some inputs failed, 2 bad input or configuration, 3 model "
               "problem, 4 output problem, 5 missing optional package, 70 internal error, "
               "130 interrupted.")
    parser.add_argument("--version", action="version", version=f"edgefer {__version__}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from edgefer.cli import build as cli_build
    from edgefer.cli import eval as cli_eval
    from edgefer.cli import live as cli_live
    from edgefer.cli import llm as cli_llm
    from edgefer.cli import score as cli_score
    from edgefer.cli import train as cli_train

    cli_score.add_commands(commands)
    cli_live.add_commands(commands)
    cli_eval.add_commands(commands)
    cli_llm.add_commands(commands)
    cli_train.add_commands(commands)
    cli_build.add_commands(commands)
    accept_debug_anywhere(parser)
    return parser


def accept_debug_anywhere(parser: argparse.ArgumentParser) -> None:
    """``--debug`` after the command (``edgefer score --debug ...``) as well as before it, as
    the hints that name it are read; a subcommand's default never hides the top-level flag."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                     help=DEBUG_HELP)
                accept_debug_anywhere(command)


if __name__ == "__main__":
    sys.exit(main())
