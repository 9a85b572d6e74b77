"""I/O. The ``ipop`` command line: ``up``, ``status``, ``dht``, ``simulate``.

User errors end with one line on standard error and a non-zero status, never a traceback: a bad
configuration exits 2 (as a bad command line does), anything else that stops a command exits 1.
Logging is configured here and nowhere else.

Control commands the node answers (``ipop.control``; the DHT ones are registered by the DHT component):

    status        {}                                   -> {"node": {...}, "<component>": {...}, ...}
    dht.get       {"key": str}                         -> [value, ...]  (a value: a string, or an
                                                          object with at least "value")
    dht.put       {"key": str, "value": str, "ttl": float}  -> anything (shown)
    dht.create    {"key": str, "value": str, "ttl": float}  -> anything; an error if another owner holds it
    dht.delete    {"key": str, "value": str}           -> anything

``ipop simulate`` calls ``ipop.simulate.run_simulation(*, nodes, seed, dht, session_median_s,
nat_blocked, create_trials, progress) -> Mapping[str, Any]`` (``progress``: a ``Callable[[str], None]``
writing to a terminal on stderr, or None) and prints its result.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from .config import ConfigError, IpopConfig
from .configfile import load_config
from .control import ControlError, request
from .logs import configure_logging, node_prefix
from .render import format_value, render_mapping, render_status
from .runtime import run_node
from .simulate import run_simulation
from .state import StateDir, StateError
from .tap import TapError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

CONTROL_TIMEOUT_S = 10.0
"""How long a CLI command waits for the node: a DHT get may take a few overlay round trips and
retries; a node that has not answered in 10 s is stuck."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipop", description="A self-configuring peer-to-peer VPN.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c", "--config", required=True, type=Path, metavar="FILE", help="the node's TOML file"
        )

    up = sub.add_parser("up", help="run a node in the foreground until SIGINT or SIGTERM")
    config_arg(up)

    status = sub.add_parser("status", help="show a running node's address, links and state")
    config_arg(status)
    status.add_argument("--json", action="store_true", help="print the node's JSON answer as is")

    dht = sub.add_parser("dht", help="read and write the distributed hash table through a running node")
    dht_sub = dht.add_subparsers(dest="dht_command", required=True, metavar="OP")
    get = dht_sub.add_parser("get", help="values under KEY")
    get.add_argument("key", metavar="KEY")
    get.add_argument("--json", action="store_true", help="print the node's JSON answer as is")
    config_arg(get)
    for op, what in (
        ("put", "add VALUE under KEY"),
        ("create", "store VALUE under KEY unless someone holds it"),
    ):
        p = dht_sub.add_parser(op, help=what)
        p.add_argument("key", metavar="KEY")
        p.add_argument("value", metavar="VALUE")
        p.add_argument("--ttl", required=True, type=_positive, metavar="S", help="lifetime in seconds")
        config_arg(p)
    delete = dht_sub.add_parser("delete", help="remove this node's VALUE under KEY")
    delete.add_argument("key", metavar="KEY")
    delete.add_argument("value", metavar="VALUE")
    config_arg(delete)

    sim = sub.add_parser("simulate", help="build an overlay of N simulated nodes and measure it")
    sim.add_argument("--nodes", type=_count, default=1000, metavar="N", help="overlay size (default 1000)")
    sim.add_argument("--seed", type=int, default=1, metavar="S", help="random seed (default 1)")
    sim.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sim.add_argument("--dht", action="store_true", help="also measure the DHT")
    sim.add_argument(
        "--session-median", type=_positive, default=None, metavar="S", help="churn: median session s"
    )
    sim.add_argument(
        "--create-trials",
        type=_count_or_zero,
        default=None,
        metavar="T",
        help="with --dht: create races of 100 nodes (default 100; issue 3's goal uses 1000)",
    )
    sim.add_argument(
        "--nat-blocked",
        type=_fraction,
        default=0.0,
        metavar="F",
        help="share of node pairs that cannot link directly (NATs)",
    )
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _count_or_zero(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1")
    return value


def fail(command: str, message: str, status: int = EXIT_FAILED) -> int:
    print(f"ipop {command}: {message}", file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command: str = args.command
    if command == "simulate":
        return cmd_simulate(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        return fail(command, str(exc), EXIT_USAGE)
    if command == "up":
        return cmd_up(config)
    try:
        if command == "status":
            return cmd_status(config, args.json)
        return cmd_dht(config, args)
    except ControlError as exc:
        name = command if command != "dht" else f"dht {args.dht_command}"
        return fail(name, str(exc))


# -- up ----------------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def cmd_up(config: IpopConfig) -> int:
    configure_logging(config.node.log_level)
    node_prefix.set(config.node.name)
    # Until the event loop installs its own handlers, SIGTERM stops the start-up like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        run_node(config)
    except KeyboardInterrupt:
        return EXIT_OK
    except (StateError, TapError) as exc:
        return fail("up", str(exc))
    except OSError as exc:
        return fail("up", f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except Exception:
        log.critical("the node failed", exc_info=True)
        return EXIT_FAILED
    return EXIT_OK


# -- status and dht -----------------------------------------------------------------------------------


def _ask(config: IpopConfig, cmd: str, args: dict[str, Any] | None = None) -> Any:
    return request(StateDir(config.node.state_dir).control_socket, cmd, args, timeout=CONTROL_TIMEOUT_S)


def cmd_status(config: IpopConfig, as_json: bool) -> int:
    status = _ask(config, "status")
    if as_json:
        print(json.dumps(status))
    elif isinstance(status, Mapping):
        print(render_status(status))
    else:
        print(format_value(status))
    return EXIT_OK


def cmd_dht(config: IpopConfig, args: argparse.Namespace) -> int:
    op: str = args.dht_command
    if op == "get":
        values = _ask(config, "dht.get", {"key": args.key})
        if args.json:
            print(json.dumps(values))
            return EXIT_OK
        if not values:
            return fail("dht get", f"no value under {args.key!r}")
        for value in values if isinstance(values, list) else [values]:
            print(_render_value(value))
        return EXIT_OK
    request_args: dict[str, Any] = {"key": args.key, "value": args.value}
    if op in ("put", "create"):
        request_args["ttl"] = args.ttl
    result = _ask(config, f"dht.{op}", request_args)
    if isinstance(result, Mapping) and result:
        print("\n".join(render_mapping(result)))
    elif result not in (None, True, {}):
        print(format_value(result))
    return EXIT_OK


def _render_value(value: Any) -> str:
    if isinstance(value, Mapping) and "value" in value:
        extra = {k: v for k, v in value.items() if k != "value"}
        details = "  (" + format_value(extra) + ")" if extra else ""
        return f"{format_value(value['value'])}{details}"
    return format_value(value)


# -- simulate ------------------------------------------------------------------------------------------


def _progress_writer() -> Callable[[str], None] | None:
    """Progress lines for a terminal on stderr (overwritten in place); none when stderr is a file or
    a pipe, so that logs and ``--json`` output stay clean."""
    if not sys.stderr.isatty():
        return None

    def write(line: str) -> None:
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()

    return write


def cmd_simulate(args: argparse.Namespace) -> int:
    configure_logging("warning")
    progress = _progress_writer()
    try:
        result = run_simulation(
            nodes=args.nodes,
            seed=args.seed,
            dht=args.dht,
            session_median_s=args.session_median,
            nat_blocked=args.nat_blocked,
            create_trials=args.create_trials,
            progress=progress,
        )
    except ValueError as exc:
        return fail("simulate", str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return fail("simulate", "interrupted")
    finally:
        if progress is not None:
            sys.stderr.write("\r\033[K")
    if args.json:
        print(json.dumps(dict(result)))
    else:
        print("\n".join(render_mapping(result)))
    return EXIT_OK
