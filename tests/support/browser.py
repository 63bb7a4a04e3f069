# SPDX-License-Identifier: GPL-3.0-or-later
"""A real headless browser for the web view's tests: the distribution's Chromium, driven by Selenium.

Nothing is downloaded at run time but through the package registry:
:func:`find_or_install` finds ``chromium`` and ``chromedriver`` (Debian's
``chromium`` and ``chromium-driver`` packages), and where they are missing
and the tests run as root with apt-get, installs them (one process at a
time: the test workers share the lock file). Selenium is handed the driver's
path, so Selenium Manager (which would download a driver) never runs, and
Chromium is started with its background networking (updates, translation,
sync) off. Elsewhere :class:`Unavailable` says why and the test is skipped
(an error in CI).

Screenshots go to ``test-artifacts/`` at the top of the checkout
(:data:`ARTIFACTS`; ignored by git).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: Where the browser tests keep their screenshots.
ARTIFACTS = REPO / "test-artifacts"
#: The Debian packages that hold the browser and its driver.
PACKAGES = ("chromium", "chromium-driver")
#: How long installing them may take (a cold package cache on a busy machine).
INSTALL_TIMEOUT = 900


class Unavailable(Exception):
    """Unavailable says why no browser can be had here."""


def find() -> tuple[str, str] | None:
    """find returns the paths of Chromium and of its chromedriver, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver") if os.access(p, os.X_OK)), None)
    return (browser, driver) if browser and driver else None


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", "-o", "DPkg::Lock::Timeout=600", *args], capture_output=True, text=True,
                          env=env, timeout=INSTALL_TIMEOUT)


def find_or_install() -> tuple[str, str]:
    """find_or_install returns Chromium's and chromedriver's paths, installing the packages when root may."""
    found = find()
    if found is not None:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise Unavailable("no headless browser: install Debian's chromium and chromium-driver (as root, the "
                          "tests install them themselves)")
    lock_path = Path(tempfile.gettempdir()) / "overlord-tests-browser.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test worker may be installing them
        found = find()
        if found is not None:
            return found
        done = _apt("install", "-y", "--no-install-recommends", *PACKAGES)
        if done.returncode != 0:  # an empty or stale package list: read it once, then try again
            _apt("update")
            done = _apt("install", "-y", "--no-install-recommends", *PACKAGES)
        found = find()
        if found is None:
            raise Unavailable(f"cannot install {' and '.join(PACKAGES)}: {done.stderr.strip()[-500:]}")
        return found


def chrome(browser: str, driver: str, profile: Path, width: int = 1360, height: int = 900) -> Any:
    """chrome starts a headless Chromium through Selenium, offline, with its own profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", f"--window-size={width},{height}", f"--user-data-dir={profile}",
                "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-extensions", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps", "--metrics-recording-only",
                "--disable-features=Translate,OptimizationHints,MediaRouter",
                # A tab the test is not looking at goes on running its script at full speed.
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows"):
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium's sandbox refuses to run as root
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))
