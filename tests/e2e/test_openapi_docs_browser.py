"""``/_stackgate/docs`` in headless Chromium, through a real gateway on the default config.

Swagger UI loads the merged document from the gateway alone (no CDN); the
demo API key goes into its "Authorize" dialog, an operation of the Flask
stack (``/v1``) is expanded and executed, and its answer is shown.
"""

from __future__ import annotations

import httpx
import pytest

from tests.browser import browser, console_errors, screenshot  # noqa: F401
from tests.services import ROOT, GatewayProcess, base_env

DEMO_KEY = "sgk_BjlsISJWJWt6sMBgjX-ty-q3R05j0-qpufoYZk4wf_0"  # alice, docs/demo-credentials.md
TITLE = "Seen through Swagger UI"
WAIT = 30.0


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs-viewer")
    config = folder / "config.toml"
    config.write_bytes((ROOT / "config.toml").read_bytes())  # the shipped config, its log beside the copy
    server = GatewayProcess(config, base_env(STACKGATE_DATA_DIR=str(folder))).start()
    yield server
    server.stop()


def until(driver, condition, message: str):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(condition, message)


def test_try_it_out_on_the_flask_stack_with_an_api_key(gateway, browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By

    created = httpx.post(gateway.url + "/v1/todos", json={"title": TITLE}, headers={"X-API-Key": DEMO_KEY}, timeout=10)
    assert created.status_code == 201, created.text

    browser.get(gateway.url + "/_stackgate/docs")
    operation = until(browser, lambda d: d.find_elements(By.ID, "operations-todos-v1-todos_v1_listTodos"), "Swagger UI did not render the /v1 operations")[0]
    assert browser.find_elements(By.ID, "operations-todos-v2-todos_v2_listTodos")  # and the Django stack's

    browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
    dialog = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".modal-ux"), "no Authorize dialog")[0]
    section = next(s for s in dialog.find_elements(By.CSS_SELECTOR, ".auth-container") if "ApiKeyAuth" in s.text)
    section.find_element(By.CSS_SELECTOR, "input").send_keys(DEMO_KEY)
    section.find_element(By.CSS_SELECTOR, "button.authorize").click()
    dialog.find_element(By.CSS_SELECTOR, "button.btn-done").click()

    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    until(browser, lambda d: operation.find_elements(By.CSS_SELECTOR, ".try-out__btn"), "the operation did not expand")[0].click()
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = until(browser, lambda d: operation.find_elements(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"), "no answer shown")[0]
    until(browser, lambda d: status.text.strip().startswith("200"), f"the answer is not a 200: {status.text}")
    body = operation.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description pre").text
    assert TITLE in body and '"count"' in body
    request_url = operation.find_element(By.CSS_SELECTOR, ".request-url pre").text
    assert request_url.startswith(gateway.url + "/v1/todos?")  # the Flask stack, through the gateway

    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", status)
    path = screenshot(browser, "openapi-docs-try-it-out", full_page=False)
    (tmp_path / path.name).write_bytes(path.read_bytes())
    assert not [e for e in console_errors(browser) if "Content Security Policy" in e or "Refused" in e]


def test_try_it_out_on_the_django_stack_with_basic(gateway, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    browser.get(gateway.url + "/_stackgate/docs")
    operation = until(browser, lambda d: d.find_elements(By.ID, "operations-todos-v2-todos_v2_getRoot"), "Swagger UI did not render the /v2 operations")[0]
    browser.find_element(By.CSS_SELECTOR, "button.authorize").click()
    dialog = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".modal-ux"), "no Authorize dialog")[0]
    section = next(s for s in dialog.find_elements(By.CSS_SELECTOR, ".auth-container") if "BasicAuth" in s.text)
    section.find_element(By.CSS_SELECTOR, "input[type=text]").send_keys("alice")
    section.find_element(By.CSS_SELECTOR, "input[type=password]").send_keys("alice-demo-password")  # docs/demo-credentials.md
    section.find_element(By.CSS_SELECTOR, "button.authorize").click()
    dialog.find_element(By.CSS_SELECTOR, "button.btn-done").click()

    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    until(browser, lambda d: operation.find_elements(By.CSS_SELECTOR, ".try-out__btn"), "the operation did not expand")[0].click()
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()
    status = until(browser, lambda d: operation.find_elements(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"), "no answer shown")[0]
    until(browser, lambda d: status.text.strip().startswith("200"), f"the answer is not a 200: {status.text}")
    body = operation.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description pre").text
    assert f'"todos": "{gateway.url}/v2/todos"' in body


def test_the_viewer_follows_openapi_json_s_rule_open_without_credentials(gateway):
    page = httpx.get(gateway.url + "/_stackgate/docs", timeout=10)
    assert page.status_code == 200 and "swagger-ui-bundle.js" in page.text
    document = httpx.get(gateway.url + "/_stackgate/openapi.json", timeout=10)
    assert document.status_code == 200
    anonymous = httpx.get(gateway.url + "/v1/todos", timeout=10)
    assert anonymous.status_code == 401  # the routes' own rules apply to the calls the viewer makes
