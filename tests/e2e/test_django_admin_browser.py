"""Django's admin in a real browser, through a real gateway: login with CSRF, static files, a form."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import pytest

from tests.browser import browser, screenshot  # noqa: F401
from tests.services import ROOT, GatewayProcess, base_env, migrate

USERNAME = "operator"
PASSWORD = "a-long-admin-password-9241"

CONFIG = """
[backends.django]
kind = "wsgi"
app = "backends.django_site.wsgi:application"

[backends.static]
kind = "static"
packages = ["rest_framework", "django.contrib.admin"]

[[routes]]
name = "django-admin"
prefix = "/admin"
backend = "django"
strip_prefix = true
auth = "none"

[[routes]]
name = "static"
prefix = "/static"
backend = "static"
auth = "none"
"""

WAIT = 15.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    folder = tmp_path_factory.mktemp("django-admin")
    config = folder / "config.toml"
    config.write_text(CONFIG)
    env = base_env(STACKGATE_DATA_DIR=str(folder))
    migrate(env)
    superuser = dict(env, DJANGO_SUPERUSER_USERNAME=USERNAME, DJANGO_SUPERUSER_PASSWORD=PASSWORD, DJANGO_SUPERUSER_EMAIL="ops@example.com")
    subprocess.run([sys.executable, "backends/django_site/manage.py", "createsuperuser", "--noinput"], cwd=ROOT, env=superuser, check=True)
    server = GatewayProcess(config, env).start()
    yield server
    server.stop()


def until(driver, condition, message: str = ""):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def fetch_status(driver, path: str) -> list:
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then(r => done([r.status, r.headers.get('content-type')])).catch(e => done([0, String(e)]));",
        path,
    )


def test_log_in_and_add_a_todo(gateway, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(gateway.url + "/admin/")
    until(browser, lambda d: "/admin/login/" in d.current_url, "the admin did not redirect to its login page")
    assert browser.current_url == gateway.url + "/admin/login/?next=/admin/"

    assert fetch_status(browser, "/static/admin/css/base.css") == [200, "text/css; charset=utf-8"]
    stylesheet_rules = browser.execute_script(
        "const sheet = [...document.styleSheets].find(s => (s.href || '').endsWith('/static/admin/css/base.css'));"
        "return sheet ? sheet.cssRules.length : -1;"
    )
    assert stylesheet_rules > 0, "the admin's base.css did not load"
    assert browser.find_element(By.ID, "header").value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    screenshot(browser, "django-admin-login")

    browser.find_element(By.ID, "id_username").send_keys(USERNAME)
    browser.find_element(By.ID, "id_password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    until(browser, lambda d: d.current_url == gateway.url + "/admin/", "the login did not land on the admin index")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Site administration"
    screenshot(browser, "django-admin-index")

    browser.find_element(By.CSS_SELECTOR, 'a[href="/admin/todos/todo/add/"]').click()
    until(browser, lambda d: d.current_url.endswith("/admin/todos/todo/add/"))
    browser.find_element(By.ID, "id_title").send_keys("Renew the TLS certificate")
    browser.find_element(By.ID, "id_owner").send_keys("alice")
    browser.find_element(By.CSS_SELECTOR, 'input[name="_save"]').click()
    until(browser, lambda d: d.current_url.endswith("/admin/todos/todo/"), "saving the todo did not return to the list")

    assert "was added successfully" in browser.find_element(By.CSS_SELECTOR, ".messagelist").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert [row.find_element(By.CSS_SELECTOR, "td.field-title").text for row in rows] == ["Renew the TLS certificate"]
    screenshot(browser, "django-admin-todo-added")


def test_login_post_without_the_csrf_token_is_refused(gateway):
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        form = client.get("/admin/login/")
        assert form.status_code == 200 and "csrftoken" in client.cookies
        credentials = {"username": USERNAME, "password": PASSWORD, "next": "/admin/"}

        refused = client.post("/admin/login/?next=/admin/", data=credentials)
        assert refused.status_code == 403
        assert "CSRF" in refused.text

        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
        accepted = client.post("/admin/login/?next=/admin/", data={**credentials, "csrfmiddlewaretoken": token})
        assert accepted.status_code == 302
        assert accepted.headers["location"] == "/admin/"
