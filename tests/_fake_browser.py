"""The user's browser, for examples that log in with `webbrowser.open`: a real headless Chromium.

Tests point $BROWSER at ``<python> tests/_fake_browser.py %s``. For a $BROWSER command holding
``%s``, Python's webbrowser runs it with the URL in place of ``%s`` and waits for it to exit (exit
status 0 means "opened"); planet_async calls the opener in a worker thread while its loopback
listener already listens. So this script does the user's part in the foreground: it opens the
authorization URL in the Chromium at $PLANET_ASYNC_CHROMIUM, signs in and consents on the test
peer's dev pages, follows the redirect to the example's listener, and exits once that page has
loaded. If $PLANET_ASYNC_FAKE_BROWSER_LOG is set, it appends each URL there, so tests can count
the logins. Chromium runs with $PLANET_ASYNC_FAKE_BROWSER_HOME as its HOME, if set: its caches
(fontconfig's takes seconds to build) then outlive one login, and stay out of the app's HOME.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests._browser import Chromium


def main(url: str) -> int:
    log = os.environ.get("PLANET_ASYNC_FAKE_BROWSER_LOG")
    if log:
        with open(log, "a") as file:
            file.write(url + "\n")
    if browser_home := os.environ.get("PLANET_ASYNC_FAKE_BROWSER_HOME"):
        os.environ["HOME"] = browser_home  # Playwright passes its environment to Chromium
    chromium = Chromium.launch(os.environ["PLANET_ASYNC_CHROMIUM"])
    try:
        seen = chromium.log_in(url).result(timeout=60)
    finally:
        chromium.close()
    print(f"fake browser: signed in, the app answered {seen.title!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
