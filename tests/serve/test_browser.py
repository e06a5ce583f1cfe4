"""A real browser on the web page: headless Chromium (Debian's chromium and
chromium-driver, driven by Selenium) against a server this test starts on 127.0.0.1.
It types a prompt and sees at least two partial bands before the final image, sends a
follow-up edit in the same session, uploads an image to edit, and downloads the PNG.
Screenshots go to $OMNI_IMG_TEST_ARTEFACTS/browser (default runs/test_artefacts/browser)."""

import contextlib
import os
import pathlib
import shutil
import time

import pytest

from tests.support.http import noise_png

ROOT = pathlib.Path(__file__).resolve().parents[2]
WAIT_S = 180
# Records every change of the image's band counters, in order, as the page makes them.
OBSERVE = """
window.__changes = [];
if (!window.__observer) {
  window.__observer = new MutationObserver((records) => {
    for (const r of records) window.__changes.push([r.attributeName, r.oldValue]);
  });
  window.__observer.observe(document.getElementById("current"),
                            {attributes: true, attributeOldValue: true,
                             attributeFilter: ["data-partials", "data-final"]});
}
"""


def artefact_dir() -> pathlib.Path:
    base = os.environ.get("OMNI_IMG_TEST_ARTEFACTS") or ROOT / "runs" / "test_artefacts"
    path = pathlib.Path(base) / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def chromium_driver(tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        pytest.skip("needs Debian's chromium and chromium-driver (launch/system_tools.sh --tests)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=900,900", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    prefs = {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def send_prompt(driver, prompt: str) -> list:
    """Type and send; wait for the final image; the band counters' changes, in order."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.execute_script(OBSERVE)
    box = driver.find_element(By.ID, "prompt")
    box.clear()
    box.send_keys(prompt)
    driver.find_element(By.ID, "send").click()

    def finished(d):
        status = d.find_element(By.ID, "status")
        if status.get_attribute("class") == "error":
            raise AssertionError(f"the page shows an error: {status.text}")
        return d.find_element(By.ID, "current").get_attribute("data-final") == "1"

    WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(finished)
    return driver.execute_script("return window.__changes")


def partials_before_final(changes: list) -> int:
    """How many partial bands the page drew before it drew the final image: after its two
    resets (partials, then final, to "0") each partial band is one data-partials change,
    and the final image the next data-final change."""
    assert [name for name, _ in changes[:2]] == ["data-partials", "data-final"], changes
    rest = changes[2:]
    final_at = next(i for i, (name, _) in enumerate(rest) if name == "data-final")
    return sum(1 for name, _ in rest[:final_at] if name == "data-partials")


def test_page_streams_bands_edits_in_a_session_uploads_and_downloads(server_url, tmp_path):
    pytest.importorskip("selenium")
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from omni_img.provenance.c2pa_png import read_manifest

    shots = artefact_dir()
    with chromium_driver(tmp_path) as driver:
        driver.get(server_url + "/")
        WebDriverWait(driver, 30).until(
            lambda d: d.find_element(By.ID, "meta").text.startswith("bundle")
        )
        changes = send_prompt(driver, "a red circle on the left")
        assert partials_before_final(changes) >= 2, changes
        driver.save_screenshot(str(shots / "1_first_turn.png"))
        first_session = driver.execute_script("return state.session")

        changes = send_prompt(driver, "now make it blue")
        assert partials_before_final(changes) >= 2, changes
        assert driver.execute_script("return state.session") == first_session
        assert len(driver.find_elements(By.CSS_SELECTOR, "#strip figure")) == 2
        driver.save_screenshot(str(shots / "2_follow_up_edit.png"))
        turns = httpx.get(f"{server_url}/v1/sessions/{first_session}").json()["turns"]
        assert [t["prompt"] for t in turns] == ["a red circle on the left", "now make it blue"]

        upload = tmp_path / "photo.png"
        upload.write_bytes(noise_png(5, (40, 40)))
        driver.find_element(By.ID, "upload").send_keys(str(upload))
        send_prompt(driver, "make the background black")
        edited_session = driver.execute_script("return state.session")
        assert edited_session != first_session
        assert len(driver.find_elements(By.CSS_SELECTOR, "#strip figure")) == 1
        assert httpx.get(f"{server_url}/v1/sessions/{edited_session}").json()[
            "started_from_upload"
        ]
        driver.save_screenshot(str(shots / "3_upload_edit.png"))

        driver.find_element(By.ID, "download").click()
        deadline = time.monotonic() + 30
        while not list(driver.downloads.glob("*.png")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (downloaded,) = driver.downloads.glob("*.png")
        report = read_manifest(downloaded.read_bytes())
        assert report is not None and report.intact
        assert report.manifest["ingredients"][0]["relationship"] == "inputTo"
        shutil.copy(downloaded, shots / "4_downloaded.png")
