"""The dashboard's layout in headless Chromium at phone and desktop widths: every box stays in its card.

Mirror diffs with lines far wider than the screen (minified JSON, a 3,000
character token) must wrap or scroll inside their box, and the page must
never scroll sideways. Screenshots go to the test's tmp dir.
"""

from __future__ import annotations

import pytest

from tests.admin.fake_stats_app import FROZEN_NOW, FakeStats, create_app
from tests.admin.test_dashboard_page import serve, shown, until
from tests.browser import chrome_driver, console_errors

HEIGHT = 900

WIDTHS = {"phone": 390, "desktop": 1280}

# Every element inside a card, whose right or left edge leaves the card's box
# (elements inside a box that scrolls by itself, such as the routes table, are that box's business).
OVERFLOWS = """
const out = [];
for (const card of document.querySelectorAll('.card, .mirror-card, .tile, .chart-box, .reload-problems')) {
  const box = card.getBoundingClientRect();
  for (const el of card.querySelectorAll('*')) {
    if (el.closest('.table-wrap') && !card.matches('.table-wrap')) continue;
    const scroller = el.parentElement && el.parentElement.closest('.diff');
    if (scroller && card.contains(scroller)) continue;
    const r = el.getBoundingClientRect();
    if (!r.width && !r.height) continue;
    if (r.right > box.right + 0.5 || r.left < box.left - 0.5) {
      out.push(`${card.dataset.testid || card.className} > ${el.tagName.toLowerCase()}.${el.className}: ${r.left}-${r.right} outside ${box.left}-${box.right}`);
    }
  }
}
return out;
"""

DIFF_BOXES = """
return [...document.querySelectorAll('.diff')].map((diff) => {
  const card = diff.closest('.mirror-card').getBoundingClientRect();
  const box = diff.getBoundingClientRect();
  const lines = [...diff.children].map((span) => span.getBoundingClientRect());
  return {
    id: diff.dataset.testid, box: [box.left, box.right], card: [card.left, card.right],
    widest: Math.max(...lines.map((r) => r.right)), clientWidth: diff.clientWidth, scrollWidth: diff.scrollWidth,
  };
});
"""


def viewport(driver, width: int, height: int) -> None:
    """Chromium's windows are at least 500 px wide: a phone's viewport is emulated (no zoom-out, no mobile UA)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})


def full_page_screenshot(driver, path, width: int):
    viewport(driver, width, driver.execute_script("return document.documentElement.scrollHeight"))
    driver.save_screenshot(str(path))
    viewport(driver, width, HEIGHT)
    return path


@pytest.mark.parametrize("width", WIDTHS.values(), ids=WIDTHS.keys())
def test_every_box_stays_inside_its_card_and_nothing_scrolls_sideways(tmp_path, width):
    fake = FakeStats(frozen_at=FROZEN_NOW, long_diffs=True)
    with serve(create_app(fake)) as url, chrome_driver(window=(max(width, 500), HEIGHT)) as driver:
        viewport(driver, width, HEIGHT)
        driver.get(url + "/_stackgate/")
        until(driver, lambda d: shown(d, "mirror-todos-v2-mismatches") == "2", message="the long diffs never rendered")
        assert driver.execute_script("return window.innerWidth") == width

        page = driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
        assert page[0] <= page[1], f"the page scrolls sideways at {width} px: {page[0]} > {page[1]}"
        diffs = driver.execute_script(DIFF_BOXES)
        assert len(diffs) == 7  # five of todos-v1 (the latest), two of todos-v2
        for diff in diffs:
            assert diff["card"][0] - 0.5 <= diff["box"][0] and diff["box"][1] <= diff["card"][1] + 0.5, diff
            assert diff["widest"] <= diff["box"][1] + 0.5, f"a diff line leaves its box: {diff}"
            assert diff["scrollWidth"] <= diff["clientWidth"], f"a diff scrolls sideways: {diff}"
        assert driver.execute_script(OVERFLOWS) == []
        assert shown(driver, "mirror-todos-v2-not_comparable") == str(fake.snapshot()["mirror"]["todos-v2"]["not_comparable"])
        cut = driver.find_element("css selector", '[data-testid="mirror-todos-v2-diff-1"]')
        assert cut.get_attribute("data-truncated") == "true"
        assert "diff cut (too long to keep whole)" in shown(driver, "mirror-todos-v2-mismatch-1")
        assert "diff cut" not in shown(driver, "mirror-todos-v2-mismatch-0")
        assert console_errors(driver) == []
        shot = full_page_screenshot(driver, tmp_path / f"dashboard-long-diffs-{width}px.png", width)
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
