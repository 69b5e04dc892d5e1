"""``stackgate``: run the gateway, check and show a config, make credentials, migrate the database.

A thin layer: every verb calls into the package.
"""

from __future__ import annotations

import argparse
import getpass
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional, Sequence

from gateway import logs
from gateway.config import _NAME, DEFAULT_PATH, Config, ConfigError, load_config


def _load(path: str) -> Optional[Config]:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.backends)} backends, version {config.digest})")
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    rows = [("PREFIX", "METHODS", "HOSTS", "BACKEND", "KIND", "VERSION", "SCRIPT_NAME")]
    for route in config.routes:
        rows.append(
            (
                route.prefix,
                ",".join(route.methods) if route.methods else "*",
                ",".join(route.hosts) if route.hosts else "*",
                route.backend,
                config.backends[route.backend].kind,
                route.version or "-",
                route.prefix if route.strip_prefix and route.prefix != "/" else "''",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return 0


def _consumer_name(name: str) -> str:
    if not _NAME.match(name):
        raise argparse.ArgumentTypeError(f'"{name}" is not a consumer name: a letter, then letters, digits, "_" or "-"')
    return name


def cmd_keys(args: argparse.Namespace) -> int:
    """``keys new NAME``: a fresh API key on stdout (once), then the line for ``[consumers.NAME]``."""
    from gateway.policies.auth import apikey

    key = apikey.new_key()
    print(key)
    print(f"{apikey.config_line(key)}   # in [consumers.{args.consumer}]")
    print(
        f"The first line is the key for {args.consumer}: it is shown only this once; config.toml keeps only its hash.\n"
        f"Add the hash to the api_keys list of [consumers.{args.consumer}] (keep any other keys it has).",
        file=sys.stderr,
    )
    return 0


def cmd_password(args: argparse.Namespace) -> int:
    """``password NAME``: the argon2 hash line for ``[consumers.NAME]``; the password from stdin or a prompt."""
    from gateway.policies.auth import basic

    if sys.stdin.isatty():
        password = getpass.getpass(f"Password for {args.consumer}: ")
        if getpass.getpass("Again: ") != password:
            print("The passwords differ; nothing printed.", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        print("The password is empty; nothing printed.", file=sys.stderr)
        return 1
    print(f"{basic.config_line(password)}   # in [consumers.{args.consumer}]")
    return 0


def migrate(verbosity: int = 1) -> None:
    """Apply Django's migrations: they own the schema both stacks use."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backends.django_site.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", interactive=False, verbosity=verbosity)


def cmd_migrate(args: argparse.Namespace) -> int:
    migrate(verbosity=args.verbosity)
    return 0


def run_warnings(config: Config, workers: int) -> list[str]:
    """What ``stackgate run`` warns about before serving (it serves all the same)."""
    warnings = []
    throttled = any(getattr(route, "throttle", None) for route in config.routes)
    if workers > 1 and throttled and config.throttle.storage == "memory://":
        warnings.append(
            f'{config.source}: throttle.storage: "memory://" with --workers {workers}: each worker counts on its own, '
            f"so a client can get up to {workers}x every rate; use a Redis URL such as "
            '"redis://127.0.0.1:6379/0" to share the counters'
        )
    return warnings


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    path = str(Path(args.config).resolve())
    config = _load(path)
    if config is None:
        return 1
    for warning in run_warnings(config, args.workers):  # a JSON line, like every line the server writes
        print(logs.JSONFormatter().line("stackgate", f"warning: {warning}", {}, level="warning"), file=sys.stderr)
    os.environ["STACKGATE_CONFIG"] = path
    os.environ["STACKGATE_LOG_LEVEL"] = args.log_level
    os.environ.pop("SCRIPT_NAME", None)  # a2wsgi would apply it to every mount
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its samples here; any worker answers /_stackgate/metrics with the sum.
        metrics_dir = tempfile.mkdtemp(prefix="stackgate-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if not os.environ.get("DATABASE_URL"):
        migrate(verbosity=0)  # the embedded SQLite default works on the first request
    settings = dict(
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,  # the gateway applies [gateway].trusted_proxies itself
        server_header=False,
        access_log=False,  # the gateway writes its own JSON access log
        log_config=logs.server_log_config(),  # and uvicorn's lines are JSON lines too
        log_level=args.log_level,
        lifespan="on",
        http="gateway.server:HttpProtocol",
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    from gateway import supervisor

    with supervisor.pid_file(args.pid_file):
        if args.workers > 1:
            supervisor.serve(uvicorn.Config("gateway.asgi:app", **settings))
        else:
            supervisor.restart_unavailable()
            uvicorn.run("gateway.asgi:app", **settings)
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _signal_disposition(pid: int, signum: int) -> Optional[str]:
    """``"caught"``, ``"ignored"`` or ``"default"`` for signal ``signum`` in process ``pid``
    (Linux's /proc; None where unknown)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    masks = {line.split(":")[0]: int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigCgt:", "SigIgn:"))}
    if len(masks) < 2:
        return None
    bit = 1 << (signum - 1)
    return "caught" if masks["SigCgt"] & bit else "ignored" if masks["SigIgn"] & bit else "default"


def cmd_restart(args: argparse.Namespace) -> int:
    """``restart``: ask a running ``stackgate run --workers N`` to replace its workers one at a time."""
    from gateway.supervisor import RESTART_SIGNAL

    pid = args.pid
    if pid is None:
        try:
            text = Path(args.pid_file).read_text().strip()
        except OSError as exc:
            print(f"{args.pid_file}: cannot read the pid file: {exc.strerror or exc} (stackgate run --pid-file writes it)", file=sys.stderr)
            return 1
        if not text.isdigit():
            print(f'{args.pid_file}: holds "{text[:40]}", not a process id', file=sys.stderr)
            return 1
        pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        print(f"no process {pid}: is the gateway running?", file=sys.stderr)
        return 1
    except PermissionError:
        pass  # it exists; the signal itself says whether it may be sent
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:  # no /proc here: the signal is sent as asked
        argv = None
    if argv is not None and not (b"run" in argv and any(b"stackgate" in arg or b"gateway" in arg for arg in argv)):
        print(f"process {pid} is not stackgate run: {b' '.join(argv).decode(errors='replace')[:100]}", file=sys.stderr)
        return 1
    disposition = _signal_disposition(pid, RESTART_SIGNAL)
    if disposition in ("ignored", "default"):
        why = "it runs one worker" if disposition == "ignored" else "it is not stackgate run"
        print(
            f"process {pid} does not take {RESTART_SIGNAL.name} ({why}): a rolling restart needs the supervisor of "
            "stackgate run --workers 2 or more; with one worker, restart the process",
            file=sys.stderr,
        )
        return 1
    try:
        os.kill(pid, RESTART_SIGNAL)
    except PermissionError:
        print(f"not allowed to signal process {pid}: run as its user", file=sys.stderr)
        return 1
    print(f"rolling restart requested ({RESTART_SIGNAL.name} to {pid}): progress in its log and at /_stackgate/status (workers)")
    return 0


VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check": cmd_check,
    "routes": cmd_routes,
    "migrate": cmd_migrate,
    "keys": cmd_keys,
    "password": cmd_password,
    "restart": cmd_restart,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stackgate", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{" + ",".join(VERBS) + "}")

    run = verbs.add_parser("run", help="serve the gateway with uvicorn")
    run.add_argument("--config", default=os.environ.get("STACKGATE_CONFIG", DEFAULT_PATH), help="config file (default: ./config.toml)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument("--workers", type=int, default=1, help="worker processes (use Redis throttling for more than one)")
    run.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    run.add_argument("--graceful-timeout", type=int, default=30, help="seconds in-flight requests get at shutdown")
    run.add_argument("--pid-file", help="write this process's id there (for stackgate restart, SIGHUP), removed at exit")

    check = verbs.add_parser("check", help="validate a config file; exit 0 when valid")
    check.add_argument("config", nargs="?", default=DEFAULT_PATH)

    routes = verbs.add_parser("routes", help="print the route table of a config file")
    routes.add_argument("config", nargs="?", default=DEFAULT_PATH)

    mig = verbs.add_parser("migrate", help="apply the database schema (Django migrations)")
    mig.add_argument("--verbosity", type=int, default=1)

    keys = verbs.add_parser("keys", help="make API keys")
    key_actions = keys.add_subparsers(dest="action", required=True, metavar="{new}")
    new = key_actions.add_parser("new", help="print a fresh API key and the line for config.toml")
    new.add_argument("consumer", type=_consumer_name, help="the consumer the key is for")

    password = verbs.add_parser("password", help="hash a password (stdin, or a prompt) for config.toml")
    password.add_argument("consumer", type=_consumer_name, help="the consumer the password is for")

    restart = verbs.add_parser("restart", help="replace the workers of stackgate run --workers N one at a time")
    target = restart.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid-file", help="the file stackgate run --pid-file wrote")
    target.add_argument("--pid", type=int, help="the process id of stackgate run (its supervisor)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return VERBS[args.verb](args)


if __name__ == "__main__":
    raise SystemExit(main())
