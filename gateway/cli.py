"""``stackgate``: run the gateway, check and show a config, make credentials, migrate the database.

A thin layer: every verb calls into the package.
"""

from __future__ import annotations

import argparse
import getpass
import gc
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from gateway import logs
from gateway.rollout import cli as rollout_cli
from gateway.migrations import migrate_before_serving
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
    for line in rollout_cli.check_report(config):  # what the plan does to a running rollout
        print(line)
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
    os.environ["STACKGATE_MIGRATE"] = "0"  # an app that migrates on import (the demo's) does not here
    use_app_dir(config.source)
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
            wanted = getattr(backend_config, "django_settings", None)
            running = _django_settings_module()
            if wanted and running and running != wanted:
                problems.append(
                    f'{config.source}: backends.{name}.django_settings: "{wanted}", but Django runs "{running}" '
                    "(set by the environment's DJANGO_SETTINGS_MODULE or by an app imported before): "
                    "one process runs one Django settings module"
                )
        finally:
            asyncio.run(backend.shutdown())
    return problems


def _django_settings_module() -> Optional[str]:
    """The settings module Django has been configured with in this process, if it has."""
    django_conf = sys.modules.get("django.conf")
    if django_conf is None or not django_conf.settings.configured:
        return None
    return getattr(django_conf.settings, "SETTINGS_MODULE", None)


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
    notes = [""]
    rollouts = rollout_cli.weights_in_force(config)  # a rollout's stored step wins over the config's weights
    for route in config.routes:
        note = ""
        if route.split:  # weights, and the kind of each backend in the same order
            weights: dict[str, Any] = dict(route.split)
            if route.label in rollouts:
                in_force, note = rollouts[route.label]
                if in_force is not None:
                    weights = {name: f"{in_force[name]:g}" for name in route.split}
            backend = ",".join(f"{name}={weight}" for name, weight in weights.items())
            kind = ",".join(config.backends[name].kind for name in route.split)
        else:
            backend, kind = route.backend, config.backends[route.backend].kind
        notes.append(note)
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
    for row, note in zip(rows, notes):  # a note after the last column: (rollout: step 2 of 5, running)
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths))
        print(f"{line}  ({note})" if note else line.rstrip())
    print(f"server: {config.server.summary()}")  # after the table: its first line stays the column heads
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


def use_app_dir(config_path: str) -> None:
    """Make the config file's folder importable, as uvicorn's ``--app-dir``: a project's
    ``config.toml`` beside ``mysite/`` finds ``mysite.wsgi`` from wherever ``stackgate`` runs.

    Also put first in ``PYTHONPATH``, for the processes the gateway starts.
    """
    folder = str(Path(config_path).resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, *paths])


def django_backend(config: Config) -> Optional[str]:
    """The name of the backend that names a Django settings module (``django_settings``), if any."""
    return next((name for name, b in config.backends.items() if getattr(b, "django_settings", None)), None)


def _setup_django(config: Config) -> bool:
    """Configure Django with the settings module of the config's Django backend (its
    ``django_settings``); False when no backend names one."""
    name = django_backend(config)
    if name is None:
        return False
    config.backends[name].use_django_settings()
    import django

    django.setup()
    return True


_NO_DJANGO = 'no backend runs Django: give the Django backend django_settings, e.g. django_settings = "mysite.settings"'


def _django_config(path: str) -> Optional[Config]:
    """The config at ``path`` with its Django backend set up (its folder importable), or None after saying why."""
    config = _load(path)
    if config is None:
        return None
    use_app_dir(config.source)
    if not _setup_django(config):
        print(f"{path}: {_NO_DJANGO}", file=sys.stderr)
        return None
    return config


def cmd_migrate(args: argparse.Namespace) -> int:
    """``migrate``: Django's migrations for the config's Django backend, whatever its ``migrate``."""
    if _django_config(args.config) is None:
        return 1
    from gateway import migrations

    migrations.migrate(verbosity=args.verbosity)
    return 0


def cmd_createsuperuser(args: argparse.Namespace) -> int:
    """Django's ``createsuperuser`` for the Django backend the config runs: the admin's first login."""
    config = _django_config(args.config)
    if config is None:
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

    migrate_before_serving(config)
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


def _stack_option(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition("=")
    if not sep or not rest:
        raise argparse.ArgumentTypeError(f'"{value}" must be NAME=VALUE, e.g. django=/v2')
    return name, rest


def cmd_init(args: argparse.Namespace) -> int:
    """``init``: a commented config.toml for the Django and Flask apps of this folder, checked as ``check`` does."""
    from gateway import scaffold

    output = Path(args.output)
    folder = output.resolve().parent
    if output.exists() and not args.force:
        print(f"{output}: exists; stackgate init leaves it alone (--force: replace it)", file=sys.stderr)
        return 1
    apps = {"django": args.django or scaffold.find_django(folder), "flask": args.flask or scaffold.find_flask(folder)}
    prefixes = dict(scaffold.DEFAULT_PREFIXES)
    for name, prefix in args.prefix:
        if name not in scaffold.STACKS:
            print(f"--prefix {name}={prefix}: the stacks are {' and '.join(scaffold.STACKS)}", file=sys.stderr)
            return 1
        prefixes[name] = prefix
    stacks = []
    for name in scaffold.STACKS:
        if apps[name]:
            stack = scaffold.Stack(name, apps[name], prefixes[name])
            if name == "django":
                stack.django_settings = args.django_settings or scaffold.django_settings_of(apps[name], folder)
            stacks.append(stack)
    if not stacks:
        print(
            f"{folder}: found no Django project (PKG/wsgi.py) and no Flask app (app = Flask(...) or def create_app()); "
            'name them: stackgate init --django mysite.wsgi:application --flask "myapp:create_app()"',
            file=sys.stderr,
        )
        return 1
    keys = scaffold.Keys()
    text = scaffold.render(stacks, keys, rate=args.rate, project=folder.name)
    # Checked before it is written: the file as it would be, then every app imported as `check` does.
    draft = output.with_name(f".{output.name}.init")
    draft.write_text(text)
    try:
        try:
            config = load_config(str(draft))
        except ConfigError as exc:
            problems = [p.replace(str(draft), str(output)) for p in exc.problems]
        else:
            problems = [p.replace(str(draft), str(output)) for p in backend_problems(config)]
        if problems:
            for problem in problems:
                print(problem, file=sys.stderr)
            print(f"{output}: not written", file=sys.stderr)
            return 1
        os.replace(draft, output)
    finally:
        draft.unlink(missing_ok=True)
    print(f"Wrote {output}:")
    for stack in stacks:
        extra = f" (settings {stack.django_settings})" if stack.django_settings else ""
        print(f"  {stack.name:7} {stack.app}{extra} at {stack.prefix}")
    print()
    print("API keys, shown only this once (the config keeps their hashes):")
    print(f"  {scaffold.CONSUMER} (role user): {keys.consumer}")
    print(f"  {scaffold.ADMIN} (role admin, for /_stackgate/): {keys.admin}")
    first = stacks[0]
    config_arg = "" if output.resolve() == Path(DEFAULT_PATH).resolve() else f" --config {output}"
    print()
    print("Next:")
    print(f"  stackgate check{' ' + str(output) if config_arg else ''}")
    if any(s.django_settings for s in stacks):
        print(f"  stackgate migrate{config_arg}     # your Django database's schema, if it is not there yet")
    print(f"  stackgate run{config_arg}")
    print(f'  curl -H "X-API-Key: {keys.consumer}" http://127.0.0.1:8000{first.prefix}/')
    print("  stackgate keys new NAME     # a key for each further consumer")
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
    use_app_dir(path)
    from gateway.edge import supervisor

    # migrate = true: the schema is there on the first request. STACKGATE_MIGRATE=0 leaves it to
    # `stackgate migrate` (a release job). With --workers N the supervisor migrates, in a child
    # forked once that stack is loaded (supervisor._start_migrations).
    migrate = os.environ.get("STACKGATE_MIGRATE", "1") != "0" and any(
        getattr(backend, "migrate", False) for backend in config.backends.values()
    )
    if migrate:
        if args.workers == 1:
            migrate_before_serving(config)
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
        http="gateway.edge.protocol:HttpProtocol",  # its limits: [server], from each process's own config load
        timeout_keep_alive=config.server.keep_alive_timeout,
        timeout_graceful_shutdown=config.server.graceful_timeout if args.graceful_timeout is None else args.graceful_timeout,
    )
    status = 0
    try:
        with supervisor.pid_file(args.pid_file):
            if args.workers > 1:
                status = supervisor.serve(uvicorn.Config("gateway.asgi:app", **settings), migrate=migrate, preload=("gateway.app",)) or 0
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


def cmd_contract_diff(args: argparse.Namespace) -> int:
    """Where a split route's stacks disagree, from their OpenAPI documents; exit 1 when they do."""
    import json

    from gateway.openapi import route_contract_diff
    from gateway.openapi.diff import format_diff

    config = _load(args.config)
    if config is None:
        return 2
    os.environ["STACKGATE_CONFIG"] = str(Path(config.source).resolve())
    os.environ.pop("SCRIPT_NAME", None)
    try:
        route, stacks, differences = route_contract_diff(config, args.route)
    except LookupError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"route": route.label, "stacks": stacks, "differences": differences}, indent=2))
    else:
        print(format_diff(route.label, stacks, differences))
    return 1 if differences else 0


def add_contract_diff_parser(verbs: Any) -> None:
    diff = verbs.add_parser(
        "contract-diff",
        help="list what a split route's stacks declare differently (OpenAPI); exit 1 when they differ",
        description="Compare the OpenAPI documents of a split route's stacks: operations, parameters, request and "
        "response fields and status codes one declares and the other does not. Exit 0: the same contract; "
        "1: differences (listed); 2: no such split route, or a stack without a document.",
    )
    diff.add_argument("route", help="the route's name, or its prefix")
    diff.add_argument("--config", default=os.environ.get("STACKGATE_CONFIG", DEFAULT_PATH), help="config file (default: ./config.toml)")
    diff.add_argument("--json", action="store_true", help="print the differences as JSON")



VERBS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "check": cmd_check,
    "routes": cmd_routes,
    "migrate": cmd_migrate,
    "keys": cmd_keys,
    "password": cmd_password,
    "createsuperuser": cmd_createsuperuser,
    "restart": cmd_restart,
    "contract-diff": cmd_contract_diff,
    "init": cmd_init,
    "rollout": lambda args: cmd_rollout(args),
}


def cmd_rollout(args: argparse.Namespace) -> int:
    """``stackgate rollout ACTION [ROUTE]``: gated rollouts (``gateway.rollout.cli``)."""
    config = _load(args.config)
    return 2 if config is None else rollout_cli.run(args, config)


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
    run.add_argument("--graceful-timeout", type=float, default=None,
                     help="seconds in-flight requests get at shutdown (default: [server] graceful_timeout, 30)")
    run.add_argument("--allow-insecure", action="store_true",
                     help="serve beyond loopback despite insecure settings (same as STACKGATE_ALLOW_INSECURE=1; logged at every start)")
    run.add_argument("--pid-file", help="write this process's id there (for stackgate restart, SIGHUP), removed at exit")

    check = verbs.add_parser("check", help="validate a config file and import its backends' apps; exit 0 when valid")
    check.add_argument("config", nargs="?", default=DEFAULT_PATH)
    check.add_argument("--no-import", action="store_true", help="validate the file only; do not import the backends' apps")

    routes = verbs.add_parser("routes", help="print the route table of a config file")
    routes.add_argument("config", nargs="?", default=DEFAULT_PATH)

    mig = verbs.add_parser("migrate", help="apply the Django backend's migrations (the one with django_settings)")
    mig.add_argument("--config", default=os.environ.get("STACKGATE_CONFIG", DEFAULT_PATH), help="config file (default: ./config.toml)")
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
    init = verbs.add_parser(
        "init",
        help="write a commented config.toml for this folder's Django and Flask apps",
        description="Write a config.toml for existing apps: found in this folder (a Django project's PKG/wsgi.py, "
        "a Flask app or create_app factory) or named; each is imported to check it. Auth is on, with a fresh "
        "API key for a first consumer and for an admin, printed once.",
    )
    init.add_argument("--django", metavar="IMPORT", help='the Django app, e.g. "mysite.wsgi:application" (default: found)')
    init.add_argument("--django-settings", metavar="MODULE", help='its settings module (default: found beside it, e.g. "mysite.settings")')
    init.add_argument("--flask", metavar="IMPORT", help='the Flask app, e.g. "myapp:app" or "myapp:create_app()" (default: found)')
    init.add_argument("--prefix", metavar="STACK=PREFIX", type=_stack_option, action="append", default=[],
                      help="the public prefix of a stack, e.g. --prefix django=/v2 --prefix flask=/v1 (default: /django, /flask)")
    init.add_argument("--rate", default="600/minute", help='requests each consumer may make (default: "600/minute")')
    init.add_argument("--output", "-o", default=DEFAULT_PATH, help="the file to write (default: ./config.toml)")
    init.add_argument("--force", action="store_true", help="replace the file if it exists")

    restart = verbs.add_parser("restart", help="replace the workers of stackgate run --workers N one at a time")
    target = restart.add_mutually_exclusive_group(required=True)
    target.add_argument("--pid-file", help="the file stackgate run --pid-file wrote")
    target.add_argument("--pid", type=int, help="the process id of stackgate run (its supervisor)")
    add_contract_diff_parser(verbs)
    rollout_cli.add_parser(verbs, DEFAULT_PATH)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.verb != "run":  # run: on once the loaded heap is frozen (gateway.edge.heap.collect_from_here)
        gc.enable()
    return VERBS[args.verb](args)


if __name__ == "__main__":
    raise SystemExit(main())
