"""``python -m stagehost_parsl plugins``: what ``stagehost plugins list`` prints, for
the plugins this package finds (its own first, then the site's)."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ._errors import StagingError
from ._host import host_for, resolve_config


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m stagehost_parsl",
        description="stagehost for Parsl: inspect the plugins and providers it uses.",
    )
    parser.add_argument(
        "--config",
        help="a stagehost config file (default: stagehost's own search order, then its embedded default)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    plugins = commands.add_parser(
        "plugins", help="list plugin directories, plugins, providers and executors"
    )
    plugins.add_argument("--json", action="store_true", help="print JSON")
    # Also after the command, as `stagehost plugins list --config FILE` users write it.
    plugins.add_argument(
        "--config", dest="command_config", help="a stagehost config file (as above)"
    )
    args = parser.parse_args(argv)
    try:
        host = host_for(resolve_config(args.command_config or args.config))
    except StagingError as e:
        print(f"stagehost: error: {e}", file=sys.stderr)
        return 2
    if args.command == "plugins":
        if args.json:
            print(host.plugins_json())
        else:
            sys.stdout.write(host.plugins_text())
    return 0


if __name__ == "__main__":
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): exit as the stagehost command does, without a
        # traceback; stdout is pointed at /dev/null so the interpreter's own flush at
        # exit is quiet too.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 141
    sys.exit(code)
