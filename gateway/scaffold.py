"""``stackgate init``: find a project's Django and Flask apps and write a first, commented config.

Discovery reads files only (nothing is imported here); ``stackgate init`` then
checks the written config the way ``stackgate check`` does.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from gateway.policies.auth import apikey

STACKS = ("django", "flask")
DEFAULT_PREFIXES = {"django": "/django", "flask": "/flask"}
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_RATE = "600/minute"
CONSUMER, ADMIN = "client", "admin"

_SKIP = {"venv", ".venv", "env", "node_modules", "site-packages", "__pycache__", "tests", "test"}
_SETTINGS_IN_WSGI = re.compile(r"""DJANGO_SETTINGS_MODULE["']\s*,\s*["']([\w.]+)["']""")
_FACTORY = re.compile(r"^def (create_app|make_app)\(\s*(\w+\s*=[^)]*)?\)", re.MULTILINE)
_APP = re.compile(r"^(app|application)\s*=\s*(flask\.)?Flask\(", re.MULTILINE)
_VERSION = re.compile(r"^/(v\d+)$")


@dataclass
class Stack:
    name: str  # "django" or "flask": the backend's name in the config
    app: str  # the import string
    prefix: str
    django_settings: Optional[str] = None

    @property
    def version(self) -> Optional[str]:
        match = _VERSION.match(self.prefix)
        return match.group(1) if match else None


@dataclass
class Keys:
    """The fresh keys the config holds hashes of: printed once, stored nowhere."""

    consumer: str = field(default_factory=apikey.new_key)
    admin: str = field(default_factory=apikey.new_key)


def _modules(folder: Path) -> list[tuple[str, Path]]:
    """Top-level modules and packages of ``folder``: (module name, its source file)."""
    found = []
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name in _SKIP:
            continue
        if path.suffix == ".py" and path.stem.isidentifier() and path.stem not in ("manage", "setup", "conftest"):
            found.append((path.stem, path))
        elif path.is_dir() and path.name.isidentifier() and (path / "__init__.py").exists():
            found.append((path.name, path / "__init__.py"))
            found.extend((f"{path.name}.{p.stem}", p) for p in sorted(path.glob("*.py")) if p.stem not in ("__init__", "settings"))
    return found


def find_django(folder: Path) -> Optional[str]:
    """``PKG.wsgi:application`` of the Django project in ``folder`` (``startproject``'s layout)."""
    for wsgi in sorted(folder.glob("*/wsgi.py")):
        if (wsgi.parent / "settings.py").exists() or _SETTINGS_IN_WSGI.search(wsgi.read_text(errors="replace")):
            if "application" in wsgi.read_text(errors="replace"):
                return f"{wsgi.parent.name}.wsgi:application"
    return None


def find_flask(folder: Path) -> Optional[str]:
    """A Flask app factory (``create_app()``) or app object (``app``) in ``folder``'s own modules."""
    apps = []
    for module, source in _modules(folder):
        text = source.read_text(errors="replace")
        if "flask" not in text.lower():
            continue
        factory = _FACTORY.search(text)
        if factory:
            return f"{module}:{factory.group(1)}()"
        app = _APP.search(text)
        if app:
            apps.append(f"{module}:{app.group(1)}")
    return apps[0] if apps else None


def django_settings_of(import_string: str, folder: Path) -> Optional[str]:
    """The settings module beside a Django ``wsgi`` module, or the one it names; None if neither."""
    module = import_string.partition(":")[0]
    package = module.rpartition(".")[0]
    if package:
        path = folder.joinpath(*package.split(".")) / "settings.py"
        if path.exists():
            return f"{package}.settings"
    added = str(folder) not in sys.path
    if added:
        sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    finally:
        if added:
            sys.path.remove(str(folder))
    if spec and spec.origin and spec.origin.endswith(".py"):
        match = _SETTINGS_IN_WSGI.search(Path(spec.origin).read_text(errors="replace"))
        if match:
            return match.group(1)
    return None


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(stacks: list[Stack], keys: Keys, rate: str = DEFAULT_RATE, project: str = "") -> str:
    """The config text: loopback hosts, auth on, two consumers, one throttle policy, a route per stack."""
    out = [
        f"# Stackgate in front of {project or 'this project'}: written by `stackgate init`, yours to edit.",
        "# Check an edit before it applies: `stackgate check`. Serve: `stackgate run` (from this folder,",
        "# or --config PATH: the folder holding this file is importable, so your apps are found).",
        "# Every key: README.md, \"config.toml reference\". Secrets never go here: write ${ENV_VAR}.",
        "",
        "[gateway]",
        "# Hosts served (the Host header, without its port); others get 421. Loopback only: add",
        "# the names your clients use before serving on another address (`stackgate run --host`).",
        f"allowed_hosts = [{', '.join(_q(h) for h in LOOPBACK_HOSTS)}]",
        "# Proxies (IPs or CIDRs) whose X-Forwarded-For / -Proto / -Host are believed: your load balancer.",
        "trusted_proxies = []",
        'max_body_size = "10MiB"           # largest request body (413 beyond)',
        "",
        "# --- Backends: your apps, served in this process (a change needs a restart) ------",
    ]
    for stack in stacks:
        out += ["", f"[backends.{stack.name}]", 'kind = "wsgi"                     # in-process WSGI app, its own thread pool']
        if stack.app.endswith("()"):
            out.append(f"app = {_q(stack.app)}" + "   # \"module:factory()\": the factory is called once")
        else:
            out.append(f"app = {_q(stack.app)}")
        if stack.django_settings:
            out += [
                f"django_settings = {_q(stack.django_settings)}   # DJANGO_SETTINGS_MODULE (one Django project per process)",
                "migrate = false                   # true: apply its migrations before serving; else `stackgate migrate`",
            ]
        out += ["threads = 4                       # more for views that mostly wait on I/O", "timeout = 30                      # seconds to the response head; beyond: 504"]
    versions = [s.version for s in stacks if s.version]
    if versions:
        out += ["", "# --- API versions: sent to the app as X-API-Version; `deprecated`/`sunset` dates add",
                "# Deprecation and Sunset headers (README, [versions.NAME]) ---------------------"]
        for version in sorted(set(versions)):
            out += ["", f"[versions.{version}]"]
    out += [
        "",
        "# --- Who may call: every route needs a consumer unless it says otherwise --------",
        "",
        "[auth]",
        'default = "required"',
        "",
        "# The key of each consumer was printed once by `stackgate init`; only its hash is here.",
        "# More consumers: `stackgate keys new NAME` (a key), `stackgate password NAME` (Basic).",
        f"[consumers.{CONSUMER}]",
        'roles = ["user"]',
        apikey.config_line(keys.consumer),
        "",
        "# Operators: /_stackgate/ (dashboard, status, stats, mirror results) needs the admin role.",
        f"[consumers.{ADMIN}]",
        'roles = ["admin"]',
        apikey.config_line(keys.admin),
        "",
        "# --- Throttling ------------------------------------------------------------------",
        "",
        "[throttle]",
        'storage = "memory://"             # one process; "redis://127.0.0.1:6379/0" for --workers N or many hosts',
        'strategy = "sliding-window-counter"',
        "",
        "[throttle.policies.standard]",
        f"rates = [{_q(rate)}]             # per consumer; beyond: 429 with Retry-After and RateLimit headers",
        'anonymous = ["60/minute"]         # clients without identity, per address',
        "",
        "# --- Routes: longest prefix wins, on whole path segments; the prefix reaches the",
        "# app as SCRIPT_NAME, so its own links and redirects carry it ----------------------",
    ]
    for stack in stacks:
        out += ["", "[[routes]]", f"name = {_q(stack.name)}", f"prefix = {_q(stack.prefix)}", f"backend = {_q(stack.name)}"]
        if stack.version:
            out.append(f"version = {_q(stack.version)}")
        out += ['auth = "required"', 'roles = ["user"]', 'throttle = "standard"']
    if len(stacks) >= 2:
        a, b = stacks[0].name, stacks[1].name
        out += [
            "",
            f"# Moving an API from {b} to {a} (or back) a step at a time: one route with weights.",
            "# Each consumer sticks to one stack; `mirror` replays GETs on the other stack and",
            "# compares the JSON answers (results at /_stackgate/mirror, admin role). Both apps",
            "# must serve the same paths under the route's prefix.",
            "#",
            "# [[routes]]",
            '# name = "shared"',
            '# prefix = "/shared"',
            f"# split = {{ {a} = 50, {b} = 50 }}",
            "# mirror = true",
            '# auth = "required"',
            '# roles = ["user"]',
            '# throttle = "standard"',
        ]
    return "\n".join(out) + "\n"
