"""docs/adopting.md, step by step, on a Django project and a Flask app that are not Stackgate's.

In a fresh folder: ``django-admin startproject mysite`` plus a small DRF app
(``catalog``) and a small Flask-RESTful app (``shop.py``), both serving
``GET /items/<id>`` with the same JSON. Then the commands the guide gives:
``stackgate init``, ``stackgate check``, ``stackgate migrate``, ``stackgate
keys new``, ``stackgate run`` (cwd = that folder, the console script), and
over HTTP: auth, throttling, version prefixes, links and redirects that carry
the prefix on both stacks, and a 50/50 split with mirroring.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from tests.bootstrap_support import Proc, clean_env

BIN = Path(sys.executable).parent
RATE = 20  # --rate 20/minute: each consumer's quota

CATALOG_VIEWS = '''
from django.shortcuts import redirect
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

ITEMS = {1: {"id": 1, "name": "desk lamp", "price": 25}, 2: {"id": 2, "name": "kettle", "price": 40}}


class ItemDetail(APIView):
    def get(self, request, pk):
        if pk not in ITEMS:
            raise NotFound("no such item")
        return Response({**ITEMS[pk], "url": reverse("item-detail", kwargs={"pk": pk}, request=request)})


def newest(request):
    return redirect("item-detail", pk=max(ITEMS))
'''

CATALOG_URLS = '''
from django.urls import path

from catalog import views

urlpatterns = [
    path("items/<int:pk>", views.ItemDetail.as_view(), name="item-detail"),
    path("newest", views.newest, name="newest"),
]
'''

SHOP = '''
"""A small Flask-RESTful shop."""

from flask import Flask, redirect, url_for
from flask_restful import Api, Resource, abort, fields, marshal_with

ITEMS = {1: {"id": 1, "name": "desk lamp", "price": 25}, 2: {"id": 2, "name": "kettle", "price": 40}}
ITEM = {"id": fields.Integer, "name": fields.String, "price": fields.Integer, "url": fields.Url("item", absolute=True)}


class Item(Resource):
    @marshal_with(ITEM)
    def get(self, id):
        if id not in ITEMS:
            abort(404, message="no such item")
        return ITEMS[id]


def create_app(test_config=None):
    app = Flask(__name__)
    api = Api(app)
    api.add_resource(Item, "/items/<int:id>", endpoint="item")

    @app.get("/newest")
    def newest():
        return redirect(url_for("item", id=max(ITEMS)))

    return app
'''


def run(*cmd: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{cmd}:\n{result.stdout}\n{result.stderr}"
    return result


def make_projects(folder: Path, env: dict) -> None:
    """A Django project with a DRF app, and a Flask-RESTful app, as their teams would write them."""
    run(str(BIN / "django-admin"), "startproject", "mysite", ".", cwd=folder, env=env)
    (folder / "catalog").mkdir()
    (folder / "catalog" / "__init__.py").write_text("")
    (folder / "catalog" / "views.py").write_text(CATALOG_VIEWS)
    (folder / "catalog" / "urls.py").write_text(CATALOG_URLS)
    settings = folder / "mysite" / "settings.py"
    settings.write_text(settings.read_text() + '\nINSTALLED_APPS += ["rest_framework", "catalog"]\n')
    urls = folder / "mysite" / "urls.py"
    text = urls.read_text().replace("from django.urls import path", "from django.urls import include, path")
    urls.write_text(text.replace("urlpatterns = [", 'urlpatterns = [\n    path("", include("catalog.urls")),', 1))
    (folder / "shop.py").write_text(SHOP)


def uncomment_split(config: Path) -> None:
    """The guide's step: remove the "# " from the commented [[routes]] block at the end of config.toml."""
    lines = config.read_text().splitlines()
    start = lines.index("# [[routes]]")
    config.write_text("\n".join(lines[:start] + [line.removeprefix("# ") for line in lines[start:]]) + "\n")


@pytest.fixture(scope="module")
def adopted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adopt")
    env = clean_env(STACKGATE_WATCH="0")
    env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
    make_projects(folder, env)

    # stackgate init: the apps found in this folder, the prefixes given
    init = run("stackgate", "init", "--prefix", "django=/v2", "--prefix", "flask=/v1", f"--rate={RATE}/minute", cwd=folder, env=env)
    assert "django  mysite.wsgi:application (settings mysite.settings) at /v2" in init.stdout, init.stdout
    assert "flask   shop:create_app() at /v1" in init.stdout, init.stdout
    keys = dict(re.findall(r"^  (\w+) \(role \w+[^)]*\): (sgk_\S+)$", init.stdout, flags=re.MULTILINE))
    assert set(keys) == {"client", "admin"}, init.stdout
    config = folder / "config.toml"
    again = subprocess.run(["stackgate", "init"], cwd=folder, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 1 and "exists" in again.stderr  # never overwritten without --force

    uncomment_split(config)
    consumers = {}  # more consumers, the guide's way: each sticks to one side of the split
    for name in ("ann", "ben", "cid", "dee", "eve", "fay"):
        made = run("stackgate", "keys", "new", name, cwd=folder, env=env)
        key, line = made.stdout.splitlines()[:2]
        consumers[name] = key
        config.write_text(config.read_text() + f'\n[consumers.{name}]\nroles = ["user"]\n{line.split("   #")[0]}\n')

    check = run("stackgate", "check", cwd=folder, env=env)
    assert check.stdout.startswith("config.toml: ok (3 routes, 2 backends"), check.stdout
    run("stackgate", "migrate", "--verbosity", "0", cwd=folder, env=env)
    assert (folder / "db.sqlite3").exists()

    proc = Proc(["stackgate", "run"], env, folder / "gateway.log", cwd=folder)
    proc.cmd += ["--port", str(proc.port)]
    proc.launch()
    try:
        proc.wait_healthy()
        yield proc, keys, consumers, folder
    finally:
        proc.stop()


def test_init_writes_a_config_without_demo_credentials(adopted):
    _, keys, _, folder = adopted
    text = (folder / "config.toml").read_text()
    assert "backends.django_site" not in text and "backends.flask_site" not in text
    assert "sha256:" in text and keys["client"] not in text  # only hashes
    assert 'allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]' in text
    assert 'django_settings = "mysite.settings"' in text and "migrate = false" in text


def test_auth_and_version_prefixes(adopted):
    proc, keys, _, _ = adopted
    client_key = {"X-API-Key": keys["client"]}
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        for prefix in ("/v1", "/v2"):
            refused = http.get(f"{prefix}/items/1")
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"], refused.text  # the one error shape
            assert http.get(f"{prefix}/items/1", headers={"X-API-Key": "sgk_wrong"}).status_code == 401
        flask = http.get("/v1/items/1", headers=client_key)
        django = http.get("/v2/items/1", headers=client_key)
    assert flask.status_code == 200 and django.status_code == 200, proc.log()
    # /v1 reached Flask and /v2 Django: DRF's APIView answers with its Allow header, Flask-RESTful without.
    assert django.headers.get("allow") == "GET, HEAD, OPTIONS" and "allow" not in flask.headers, (flask.headers, django.headers)
    # Links carry the public prefix on both stacks (Flask-RESTful fields.Url, DRF reverse()).
    assert flask.json() == {"id": 1, "name": "desk lamp", "price": 25, "url": f"{proc.url}/v1/items/1"}
    assert django.json() == {"id": 1, "name": "desk lamp", "price": 25, "url": f"{proc.url}/v2/items/1"}


def test_redirects_carry_the_prefix(adopted):
    proc, keys, _, _ = adopted
    with httpx.Client(base_url=proc.url, timeout=10, headers={"X-API-Key": keys["client"]}) as http:
        for prefix in ("/v1", "/v2"):
            moved = http.get(f"{prefix}/newest")
            assert moved.status_code == 302, moved.text
            assert moved.headers["location"] in (f"{prefix}/items/2", f"{proc.url}{prefix}/items/2"), moved.headers
            followed = http.get(f"{prefix}/newest", follow_redirects=True)
            assert followed.status_code == 200 and followed.json()["url"] == f"{proc.url}{prefix}/items/2"


def test_split_between_the_stacks_with_mirroring(adopted):
    proc, keys, consumers, _ = adopted
    seen = {}
    with httpx.Client(base_url=proc.url, timeout=10) as http:
        for name, key in consumers.items():
            for _ in range(3):  # sticky: one consumer, one stack
                answer = http.get("/shared/items/1", headers={"X-API-Key": key})
                assert answer.status_code == 200, answer.text + proc.log()
                assert answer.json() == {"id": 1, "name": "desk lamp", "price": 25, "url": f"{proc.url}/shared/items/1"}
                seen.setdefault(name, set()).add(answer.headers["x-served-by"])
        assert all(len(stacks) == 1 for stacks in seen.values()), seen
        assert set.union(*seen.values()) == {"django", "flask"}, seen

        admin = {"X-API-Key": keys["admin"]}
        assert http.get("/_stackgate/mirror", headers={"X-API-Key": keys["client"]}).status_code == 403
        deadline = time.monotonic() + 60
        while True:  # the copies run in the shadow process, after the answers
            results = http.get("/_stackgate/mirror", headers=admin)
            assert results.status_code == 200, results.text
            shared = results.json().get("shared", {})
            if shared.get("matches", 0) >= len(consumers) * 3:
                break
            assert time.monotonic() < deadline, f"mirror results: {results.json()}\n{proc.log()}"
            time.sleep(0.2)
    assert shared["mismatches"] == 0 and shared["errors"] == 0, shared


def test_throttling_answers_429_past_the_rate(adopted):
    proc, _, consumers, _ = adopted
    key = {"X-API-Key": consumers["fay"]}  # 3 requests so far (the split test)
    statuses = []
    with httpx.Client(base_url=proc.url, timeout=10, headers=key) as http:
        for _ in range(RATE + 5):
            answer = http.get("/v1/items/2")
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                break
    assert statuses[-1] == 429, statuses
    assert answer.headers["retry-after"] and answer.json()["error"]["code"], answer.text
    assert statuses.count(200) >= RATE - 3 - 2, statuses  # the quota, less what the split test used (and window slack)
