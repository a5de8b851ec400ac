"""Command line start-up: parse, load settings, dispatch to a command, errors to exit codes."""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from reconciler.cli import commands
from reconciler.cli.commands import EXIT_FAILED, EXIT_USAGE
from reconciler.cli.parser import build_parser
from reconciler.config import load_settings, quick_state_paths
from reconciler.errors import ReconcilerError, UsageError

if TYPE_CHECKING:
    from reconciler.config import Settings


def main(argv: Sequence[str] | None = None) -> int:
    # reconciler uses no pydantic plugin; without this, pydantic scans every installed package's
    # metadata for one at the first model build (a visible part of every command's start-up).
    # An operator who wants plugins sets the variable themselves.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    # Start-up builds a great many objects (cryptography's bindings, the settings' pydantic
    # models) and next to no garbage cycles: collecting meanwhile only slows it down.
    # Commands that go on to real work turn collection back on once settings are loaded.
    collecting = gc.isenabled()
    gc.disable()
    try:
        # Inside the try: a usage error or --help leaves by SystemExit, and the finally below
        # must still turn collection back on (main() is also called in-process, by tests).
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except ReconcilerError as exc:  # settings, lock, I/O: one line, no traceback
        from reconciler.support.redact import scrub_line

        print(f"reconciler: {scrub_line(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `reconciler audit show | head`: the reader left; say nothing more, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    finally:
        if collecting:
            gc.enable()


def _dispatch(args: argparse.Namespace) -> int:
    name = args.command
    if name == "schema":
        return commands.schema(args.file)
    if name == "validate":
        # `validate` reads two settings: without a settings file or another setting in force,
        # they are known without loading (and importing) the settings model.
        quick = quick_state_paths(args.config, args.state)
        if quick is not None:
            return commands.validate(*quick, args)
    settings: Settings
    if name == "run":
        from reconciler.config import load_settings_apart

        # The daemon keeps its settings for as long as it runs: checked in a child process, so
        # that pydantic-settings never takes its memory here (see config.apart).
        settings = load_settings_apart(args.config, state_dir=args.state, root=args.root)
    else:
        settings = load_settings(args.config, state_dir=args.state, root=args.root)
    if name == "validate":
        return commands.validate(settings.state_dir, settings.key_dirs, args)
    from reconciler.cli import preflight

    preflight.check(name, settings, args.config)
    gc.enable()  # passes, the daemon, logs and probes: garbage is collected as usual
    return commands.WITH_SETTINGS[name](settings, args)
