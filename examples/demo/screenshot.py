"""Regenerate docs/dashboard.png: ``.venv/bin/python examples/demo/screenshot.py``."""

from __future__ import annotations

import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import app as demo  # noqa: E402
import browser  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def main(target: str = os.path.join(HERE, "..", "..", "docs", "dashboard.png")) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        application = demo.create_app(f"sqlite:///{os.path.join(tmp, 'demo.sqlite')}")
        with browser.serve(application) as url, browser.chromium(1280, 1000) as driver:
            driver.get(url + "/?user=acme-admin")
            WebDriverWait(driver, 30).until(
                lambda d: (
                    d.find_element("id", "psa").get_attribute("data-state") == "ok"
                    and d.find_element("id", "escalations").get_attribute("data-state") == "ok"
                )
            )
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            driver.save_screenshot(os.path.abspath(target))
        with application.app_context():
            demo.db.engine.dispose()
    print(f"wrote {os.path.abspath(target)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
