"""A real browser for the report tests: Debian's chromium and
chromium-driver (scripts/test.sh installs them), driven headless by
selenium. A browser that downloads itself cannot be fetched in CI."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = ('/usr/bin/chromium', '/usr/bin/chromium-browser')
CHROMEDRIVER = ('/usr/bin/chromedriver', '/usr/lib/chromium/chromedriver')

# No network, no first-run UI, nothing started beside the page.
CHROMIUM_FLAGS = (
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
    '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync',
    '--disable-dev-shm-usage',
)

# Installed in every page before its own scripts: resource load failures
# (an <img> that 404s), uncaught errors, rejected promises and
# console.error calls are kept in ``window.__pageErrors``. The browser's
# console log reaches chromedriver asynchronously and may lag the page by
# an unknown time; this record is complete once the page's load event has
# fired, so a check on it neither races nor misses a late error.
PAGE_ERROR_RECORDER = r'''
(() => {
  const errors = [];
  Object.defineProperty(window, '__pageErrors', {value: errors});
  window.addEventListener('error', event => {
    const target = event.target;
    if (target && target !== window && (target.src || target.href)) {
      errors.push('failed to load ' + (target.currentSrc || target.src
                                       || target.href));
    } else {
      errors.push('uncaught ' + (event.message || String(event.error)));
    }
  }, true);
  window.addEventListener('unhandledrejection', event => {
    errors.push('unhandled rejection ' + String(event.reason));
  });
  const consoleError = console.error.bind(console);
  console.error = (...args) => {
    errors.push('console.error ' + args.map(String).join(' '));
    consoleError(...args);
  };
})();
'''


def _first(paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if Path(p).is_file()), None)


@pytest.fixture(scope='session')
def browser(tmp_path_factory) -> Iterator[object]:
    """One headless chromium for the session, with a fresh profile and the
    console log kept (``browser.get_log('browser')``)."""
    binary, driver_path = _first(CHROMIUM), _first(CHROMEDRIVER)
    if binary is None or driver_path is None:
        message = ("Debian's chromium and chromium-driver are needed "
                   "(apt-get install chromium chromium-driver; "
                   "scripts/test.sh does it).")
        if os.environ.get('CI'):
            pytest.fail(message)
        pytest.skip(message)
    selenium = pytest.importorskip('selenium')
    del selenium
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path_factory.mktemp('chromium-profile')
    options.add_argument(f'--user-data-dir={profile}')
    options.add_argument('--window-size=1400,1000')
    options.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    log = tmp_path_factory.mktemp('chromedriver') / 'chromedriver.log'
    service = Service(executable_path=driver_path, log_output=str(log))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    driver.execute_cdp_cmd('Page.addScriptToEvaluateOnNewDocument',
                           {'source': PAGE_ERROR_RECORDER})
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
