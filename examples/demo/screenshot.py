"""Regenerate docs/dashboard.png (the plugin's page, as the demo serves it to acme's admin, whole):
``.venv/bin/python examples/demo/screenshot.py``."""

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
            driver.get(url + "/demo/login?user=acme-admin")  # the cookie sign-in opens the page
            WebDriverWait(driver, 30).until(  # every call answered (the by-client table's too)
                lambda d: (
                    d.find_element("tag name", "body").get_attribute("data-loaded")
                    and all(
                        d.find_element("id", card).get_attribute("data-state") == "ok"
                        for card in ("escalations", "savings", "psa")
                    )
                )
            )
            # the whole page, the savings card below the escalations included: a window as tall
            # as the page (its inner height is the window's less the browser's own frame)
            frame = driver.execute_script("return window.outerHeight - window.innerHeight")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1280, int(height) + int(frame))
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
            driver.save_screenshot(os.path.abspath(target))
        with application.app_context():
            demo.db.engine.dispose()
    print(f"wrote {os.path.abspath(target)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
