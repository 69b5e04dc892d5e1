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
    if not args.no_import:
        problems = backend_problems(config)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
    print(f"{args.config}: ok ({len(config.routes)} routes, {len(config.backends)} backends, version {config.digest})")
    return 0


def backend_problems(config: Config) -> list[str]:
    """Build each backend as ``run`` does (importing its ``app``), then close it; a failure is one line.

    The environment is ``run``'s (``STACKGATE_CONFIG``, no ``SCRIPT_NAME``); no server,
    thread or database migration is started. An app module sets up its own framework
    (the Django stack's ``wsgi.py`` sets ``DJANGO_SETTINGS_MODULE``), as under any ASGI server.
    """
    import asyncio

    from gateway.backends import build_backend

    os.environ["STACKGATE_CONFIG"] = str(Path(config.source).resolve())
    os.environ.pop("SCRIPT_NAME", None)
    problems = []
    for name, backend_config in config.backends.items():
        import_string = getattr(backend_config, "app", None)
        where = f"{config.source}: backends.{name}.app" if import_string else f"{config.source}: backends.{name}"
        try:
            backend = build_backend(name, backend_config)
        except (Exception, SystemExit) as exc:
            if import_string:
                problems.append(f'{where}: cannot import "{import_string}": {_one_line(exc)}')
            else:  # the kind's own message, e.g. a static package that is not installed
                problems.append(f"{where}: {_first_line(exc).removeprefix(f'backends.{name}: ')}")
            continue
        try:
            if import_string and not callable(getattr(backend, "app", None)):
                problems.append(f'{where}: "{import_string}" is {type(backend.app).__name__}, not an application (a callable)')
        finally:
            asyncio.run(backend.shutdown())
    return problems


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def _one_line(exc: BaseException) -> str:
    from uvicorn.importer import ImportFromStringError

    message = _first_line(exc)
    if isinstance(exc, ImportFromStringError):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def cmd_routes(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    rows = [("PREFIX", "METHODS", "HOSTS", "BACKEND", "KIND", "VERSION", "SCRIPT_NAME")]
    for route in config.routes:
        if route.split:  # weights, and the kind of each backend in the same order
            backend = ",".join(f"{name}={weight}" for name, weight in route.split.items())
            kind = ",".join(config.backends[name].kind for name in route.split)
        else:
            backend, kind = route.backend, config.backends[route.backend].kind
        rows.append(
            (
                route.prefix,
                ",".join(route.methods) if route.methods else "*",
                ",".join(route.hosts) if route.hosts else "*",
                backend,
                kind,
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
    """Apply Django's migrations: they own the schema both stacks use.

    On SQLite, processes that start together (``uvicorn --workers N``) take turns.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backends.django_site.settings")
    import fcntl

    import django
    from django.core.management import call_command
    from django.db import connection

    django.setup()
    if connection.vendor != "sqlite" or str(connection.settings_dict["NAME"]).startswith(":memory:"):
        call_command("migrate", interactive=False, verbosity=verbosity)
        return
    with open(f"{connection.settings_dict['NAME']}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        call_command("migrate", interactive=False, verbosity=verbosity)


def migrate_embedded() -> None:
    """What ``stackgate run`` and ``gateway.asgi`` do first: migrate the embedded SQLite database.

    With ``DATABASE_URL`` set (PostgreSQL) the schema is the operator's to apply: ``stackgate migrate``.
    """
    if os.environ.get("DATABASE_URL"):
        return
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        migrate(verbosity=0)
        return
    # Imported inside a server's event loop (uvicorn --workers/--reload load the app there):
    # Django's ORM refuses to run in an async context, so the migrations get a thread of their own.
    from concurrent.futures import ThreadPoolExecutor

    def migrate_and_close() -> None:
        from django.db import connections

        try:
            migrate(verbosity=0)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1, thread_name_prefix="stackgate-migrate") as pool:
        pool.submit(migrate_and_close).result()


def cmd_migrate(args: argparse.Namespace) -> int:
    migrate(verbosity=args.verbosity)
    return 0


def _setup_django(config: Config) -> bool:
    """Import the config's in-process apps until one has configured Django; False when none runs it."""
    from django.conf import settings

    from gateway.backends.base import load_app

    for backend in config.backends.values():
        if settings.configured:
            break
        if getattr(backend, "kind", None) in ("wsgi", "asgi"):
            load_app(backend.app)
    if not settings.configured:
        return False
    import django

    django.setup()
    return True


def cmd_createsuperuser(args: argparse.Namespace) -> int:
    """Django's ``createsuperuser`` for the Django backend the config runs: the admin's first login."""
    config = _load(args.config)
    if config is None:
        return 1
    if not _setup_django(config):
        print(f"{args.config}: no backend runs Django (a wsgi or asgi backend whose app configures Django settings)", file=sys.stderr)
        return 1
    if not args.noinput and not sys.stdin.isatty():
        print(
            "stackgate createsuperuser: no terminal to ask on; pass --noinput with --username and --email, "
            "and the password in DJANGO_SUPERUSER_PASSWORD",
            file=sys.stderr,
        )
        return 1
    from django.core.management import call_command
    from django.core.management.base import CommandError

    migrate_embedded()
    options = {"interactive": not args.noinput, "verbosity": 1}
    if args.username:
        options["username"] = args.username
    if args.email:
        options["email"] = args.email
    try:
        call_command("createsuperuser", **options)
    except CommandError as exc:
        print(f"stackgate createsuperuser: {exc}", file=sys.stderr)
        return 1
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

    from gateway import bootstrap

    path = os.path.abspath(args.config)  # not resolved: a Kubernetes ConfigMap swaps the symlinks under it
    config = _load(path)
    if config is None:
        return 1
    for warning in run_warnings(config, args.workers):  # a JSON line, like every line the server writes
        print(logs.JSONFormatter().line("stackgate", f"warning: {warning}", {}, level="warning"), file=sys.stderr)
    os.environ["STACKGATE_CONFIG"] = path
    os.environ["STACKGATE_LOG_LEVEL"] = args.log_level
    if args.allow_insecure:
        os.environ[bootstrap.ALLOW_ENV] = "1"  # the workers log it, with what it lets through
    os.environ.pop("SCRIPT_NAME", None)  # a2wsgi would apply it to every mount
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Every worker writes its samples here; any worker answers /_stackgate/metrics with the sum.
        metrics_dir = tempfile.mkdtemp(prefix="stackgate-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    migrate_embedded()  # the embedded SQLite default works on the first request
    os.environ["STACKGATE_MIGRATE"] = "0"  # done once here, not again in each worker
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
        http="gateway.edge.protocol:HttpProtocol",
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    from gateway.edge import supervisor

    status = 0
    try:
        with supervisor.pid_file(args.pid_file):
            if args.workers > 1:
                status = supervisor.serve(uvicorn.Config("gateway.asgi:app", **settings)) or 0
            else:
                supervisor.restart_unavailable()
                # Bound before the app starts, so that its bootstrap checks know the address
                # and a refusal stops it before anything is served (gateway.bootstrap).
                server = uvicorn.Server(uvicorn.Config("gateway.asgi:app", **settings))
                sock = server.config.bind_socket()
                try:
                    server.run(sockets=[sock])
                finally:
                    sock.close()
                status = 0 if server.started else bootstrap.EXIT_REFUSED
    except KeyboardInterrupt:
        pass
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return status


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
    from gateway.edge.supervisor import RESTART_SIGNAL

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
    "createsuperuser": cmd_createsuperuser,
    "restart": cmd_restart,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stackgate", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{" + ",".join(VERBS) + "}")

    run = verbs.add_parser("run", help="serve the gateway with uvicorn")
    run.add_argument("--config", default=os.environ.get("STACKGATE_CONFIG", DEFAULT_PATH), help="config file (default: ./config.toml)")
    run.add_argument("--host", default=os.environ.get("STACKGATE_HOST", "127.0.0.1"),
                     help="address to listen on (default: $STACKGATE_HOST or 127.0.0.1; beyond loopback the bootstrap checks refuse insecure settings)")
    run.add_argument("--port", type=int, default=int(os.environ.get("STACKGATE_PORT") or 8000), help="default: $STACKGATE_PORT or 8000")
    run.add_argument("--workers", type=int, default=1, help="worker processes (use Redis throttling for more than one)")
    run.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    run.add_argument("--graceful-timeout", type=int, default=30, help="seconds in-flight requests get at shutdown")
    run.add_argument("--allow-insecure", action="store_true",
                     help="serve beyond loopback despite insecure settings (same as STACKGATE_ALLOW_INSECURE=1; logged at every start)")
    run.add_argument("--pid-file", help="write this process's id there (for stackgate restart, SIGHUP), removed at exit")

    check = verbs.add_parser("check", help="validate a config file and import its backends' apps; exit 0 when valid")
    check.add_argument("config", nargs="?", default=DEFAULT_PATH)
    check.add_argument("--no-import", action="store_true", help="validate the file only; do not import the backends' apps")

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

    superuser = verbs.add_parser(
        "createsuperuser",
        help="create a user of Django's admin (/admin/) in the configured Django backend",
        description="Django's createsuperuser for the config's Django backend (migrates the embedded database first). "
        "Without a terminal: --noinput --username NAME --email ADDRESS, and the password in DJANGO_SUPERUSER_PASSWORD.",
    )
    superuser.add_argument("--config", default=os.environ.get("STACKGATE_CONFIG", DEFAULT_PATH), help="config file (default: ./config.toml)")
    superuser.add_argument("--username", help="the login name (asked when not given)")
    superuser.add_argument("--email", help="the user's email address")
    superuser.add_argument("--noinput", "--no-input", action="store_true",
                           help="ask nothing: the password comes from DJANGO_SUPERUSER_PASSWORD")
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
