"""`align serve`'s search page (GET /) in a real headless Chromium, driven by Selenium through
Debian's chromium-driver: text search, search by an image file and by clicking a result, and
errors, each checked against the JSON API it calls; a screenshot is left in
target/test-artifacts/serve_page.png."""

import base64
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from conftest import PHOTOS, ROOT, TINY, align_bin, run_align

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
SCREENSHOT = ROOT / "target/test-artifacts/serve_page.png"
WAIT_S = 60  # a debug build of the server embeds queries slowly

# Ten distinct photos (no two within clip-back's 0.94 dedup threshold with the tiny model);
# the two without a caption show their file name instead. The rocket's caption is markup that
# must show as text.
CAPTIONS = {
    "chelsea.png": "a cat lying on a rug",
    "coffee.jpg": "a cup of coffee",
    "astronaut.jpg": "an astronaut with a flag",
    "immuno.webp": "cells under a microscope",
    "motorcycle_left.jpg": "a red motorcycle",
    "rocket_q95_444.jpg": '<b>a rocket</b> & "its launch pad"',
    "hubble_3000x2000.jpg": "a galaxy seen by hubble",
    "panorama_1200x200.png": "a wide panorama",
    "camera_grey.png": None,
    "logo_rgba.png": None,
}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """(photo folder, `align index --text` output)."""
    root = tmp_path_factory.mktemp("serve")
    folder = root / "photos"
    folder.mkdir()
    for name, caption in CAPTIONS.items():
        shutil.copy(PHOTOS / name, folder / name)
        if caption is not None:
            (folder / name).with_suffix(".txt").write_text(caption)
    out = root / "index"
    run_align("index", "--model", TINY, "--text", "--out", out, folder)
    return folder, out


def no_proxy_opener():
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(url, body=None):
    """(status, bytes) of GET url, or of POST url with the JSON body."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with no_proxy_opener().open(req, timeout=WAIT_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Server:
    def __init__(self, proc, url, log):
        self.proc, self.url, self.log = proc, url, log

    def log_text(self):
        return self.log.read_text(errors="replace")[-4000:]

    def knn(self, body):
        status, data = http(self.url + "/knn-service", body)
        assert status == 200, f"POST /knn-service {status}: {data[:500]!r}"
        return json.loads(data)


@pytest.fixture(scope="module")
def server(collection, tmp_path_factory):
    _, out = collection
    log = tmp_path_factory.mktemp("serve_log") / "stderr.txt"
    args = [str(align_bin()), "serve", "--model", str(TINY), "--index", f"photos={out}",
            "--host", "127.0.0.1", "--port", "0"]
    with open(log, "wb") as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines = queue.Queue()

    def drain():  # stdout is read to the end so that the server can never block on it
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    try:
        first = lines.get(timeout=120)
    except queue.Empty:
        first = None
    if first is None:
        proc.kill()
        proc.wait()
        pytest.fail(f"`align serve` printed no address line (exit code {proc.returncode}):\n"
                    f"{log.read_text(errors='replace')[-4000:]}")
    try:
        info = json.loads(first)
        assert info["indices"] == ["photos"], info
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", info["url"]), info
        yield Server(proc, info["url"], log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        pytest.fail(f"selenium is not installed ({e}): pip install -r tests/python/requirements.txt")
    for path, package in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")]:
        if not Path(path).is_file():
            pytest.fail(f"{path}: not found; apt-get install {package} (or set "
                        f"{'CHROMIUM_BIN' if package == 'chromium' else 'CHROMEDRIVER_BIN'})")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # explicit paths: Selenium Manager downloads nothing
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-proxy-server", "--window-size=1280,1000", "--force-device-scale-factor=1"]:
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except WebDriverException as e:
        pytest.fail(f"headless Chromium did not start ({CHROMIUM} via {CHROMEDRIVER}): {e.msg}")
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


def by_id(driver, id_):
    from selenium.webdriver.common.by import By
    return driver.find_element(By.ID, id_)


def open_page(driver, server):
    """Loads the page and waits until it has listed the indices."""
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get(server.url + "/")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.execute_script("return document.getElementById('index').options.length") > 0,
        "the page did not fill the index selector from /indices-list")


def searches(driver):
    return int(by_id(driver, "results").get_attribute("data-searches"))


def wait_search(driver, server, before):
    """Waits until the page has finished a search after the `before`-th."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        WebDriverWait(driver, WAIT_S).until(lambda d: searches(d) > before)
    except TimeoutException:
        pytest.fail(f"no search finished within {WAIT_S} s; #status says "
                    f"{by_id(driver, 'status').text!r}; server log:\n{server.log_text()}")
    return driver.execute_script("return window.alignLastRequest")


CARDS_JS = """
return [...document.querySelectorAll('#results .result')].map(card => {
  const img = card.querySelector('img');
  return {id: card.dataset.id, similarity: card.querySelector('.similarity').textContent,
          caption: card.querySelector('.caption').textContent,
          caption_elements: card.querySelector('.caption').children.length,
          alt: img.alt, src: img.getAttribute('src'), complete: img.complete,
          width: img.naturalWidth, height: img.naturalHeight};
});
"""


def cards(driver):
    return driver.execute_script(CARDS_JS)


def wait_images(driver, server):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    driver.execute_script("window.scrollTo(0, document.body.scrollHeight)")  # lazy images
    try:
        WebDriverWait(driver, WAIT_S).until(
            lambda d: all(c["complete"] and c["width"] > 0 for c in cards(d)))
    except TimeoutException:
        broken = [c["src"] for c in cards(driver) if not (c["complete"] and c["width"] > 0)]
        pytest.fail(f"thumbnails not shown: {broken}; server log:\n{server.log_text()}")
    driver.execute_script("window.scrollTo(0, 0)")
    return cards(driver)


def check_cards(shown, rows, index="photos"):
    """The page shows `rows` (the API's answer) in order, similarities to 3 decimals."""
    assert [c["id"] for c in shown] == [str(r["id"]) for r in rows]
    for card, row in zip(shown, rows):
        assert re.fullmatch(r"-?\d\.\d{3}", card["similarity"]), card
        assert abs(float(card["similarity"]) - row["similarity"]) <= 0.0005 + 1e-9, (card, row)
        caption = row["caption"] if row.get("caption") else Path(row["image_path"]).name
        assert card["caption"] == caption and card["alt"] == caption
        assert card["caption_elements"] == 0  # text, never parsed markup
        assert card["src"] == f"/image/{index}/{row['id']}"


def test_text_search_shows_what_the_api_answers(browser, server, collection):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select
    open_page(browser, server)
    assert browser.title == "ALIGN search"
    index = by_id(browser, "index")
    assert [o.get_attribute("value") for o in Select(index).options] == ["photos"]
    assert not index.is_displayed() or not index.is_enabled()  # one index: nothing to choose
    # Defaults, and a label for every control.
    assert Select(by_id(browser, "modality")).first_selected_option.get_attribute("value") == "image"
    assert by_id(browser, "count").get_attribute("value") == "40"
    assert by_id(browser, "dedup").is_selected()
    for id_ in ["index", "query", "modality", "count", "dedup", "file"]:
        assert browser.execute_script(f"return document.querySelector('label[for={id_}]') !== null"), id_

    query = "a cat lying on a rug"
    box = by_id(browser, "query")
    box.send_keys(query)
    before = searches(browser)
    box.send_keys(Keys.ENTER)
    req = wait_search(browser, server, before)
    assert {k: req[k] for k in ["text", "indice_name", "modality", "num_images", "deduplicate"]} == \
        {"text": query, "indice_name": "photos", "modality": "image", "num_images": 40,
         "deduplicate": True}
    assert "image" not in req and req["num_result_ids"] >= 40
    rows = server.knn(req)
    assert len(rows) == len(CAPTIONS)  # ten distinct photos: dedup drops none
    assert re.fullmatch(rf"{len(rows)} results in \d+ ms", by_id(browser, "status").text)
    shown = wait_images(browser, server)
    check_cards(shown, rows)
    # Thumbnails: longest side 512 at most; the 3000x2000 photo scaled down to it.
    by_name = {Path(r["image_path"]).name: c for r, c in zip(rows, shown)}
    assert all(max(c["width"], c["height"]) <= 512 for c in shown)
    assert (by_name["hubble_3000x2000.jpg"]["width"], by_name["hubble_3000x2000.jpg"]["height"]) == (512, 341)
    assert by_name["rocket_q95_444.jpg"]["caption"] == CAPTIONS["rocket_q95_444.jpg"]
    assert by_name["camera_grey.png"]["caption"] == "camera_grey.png"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
    with Image.open(SCREENSHOT) as shot:
        assert shot.format == "PNG" and shot.width >= 1000 and shot.height >= 700, shot.size
        assert len(shot.convert("RGB").getcolors(1 << 20)) > 500  # thumbnails, not a blank page
    assert SCREENSHOT.stat().st_size > 50_000

    # The other controls reach the request: captions' embeddings, 5 results, no dedup.
    Select(by_id(browser, "modality")).select_by_value("text")
    count = by_id(browser, "count")
    count.clear()
    count.send_keys("5")
    by_id(browser, "dedup").click()
    before = searches(browser)
    by_id(browser, "search").click()
    req = wait_search(browser, server, before)
    assert (req["text"], req["modality"], req["num_images"], req["deduplicate"]) == \
        (query, "text", 5, False)
    rows = server.knn(req)
    assert len(rows) == 5
    check_cards(wait_images(browser, server), rows)


def test_search_by_file_then_by_clicking_a_result(browser, server, collection):
    from selenium.webdriver.common.by import By
    folder, _ = collection
    open_page(browser, server)
    photo = folder / "coffee.jpg"
    before = searches(browser)
    by_id(browser, "file").send_keys(str(photo))
    req = wait_search(browser, server, before)
    assert "text" not in req
    assert base64.b64decode(req["image"], validate=True) == photo.read_bytes()
    rows = server.knn(req)
    shown = wait_images(browser, server)
    check_cards(shown, rows)
    # The photo itself is in the index: it comes first, with a similarity of ~1.
    assert rows[0]["image_path"] == str(photo) and rows[0]["similarity"] > 0.99

    # Clicking the last result searches by its thumbnail, which finds that row first.
    target = shown[-1]["id"]
    assert target != shown[0]["id"]
    before = searches(browser)
    browser.find_elements(By.CSS_SELECTOR, "#results .result img")[-1].click()
    req = wait_search(browser, server, before)
    status, thumb = http(f"{server.url}/image/photos/{target}")
    assert status == 200 and thumb[:3] == b"\xff\xd8\xff"
    assert base64.b64decode(req["image"], validate=True) == thumb
    rows = server.knn(req)
    shown = wait_images(browser, server)
    check_cards(shown, rows)
    assert shown[0]["id"] == target and rows[0]["similarity"] > 0.95


def test_errors_show_in_the_status_line(browser, server, tmp_path):
    open_page(browser, server)
    status = by_id(browser, "status")
    # An empty query is refused on the page, without a request.
    by_id(browser, "query").clear()
    by_id(browser, "search").click()
    assert "query" in status.text.lower()
    assert browser.execute_script("return window.alignLastRequest === undefined")
    assert searches(browser) == 0

    # The server's JSON error, as is: a file that is no image.
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("this is not a picture")
    by_id(browser, "file").send_keys(str(bad))
    req = wait_search(browser, server, 0)
    code, body = http(server.url + "/knn-service", req)
    assert code == 400, (code, body)
    message = json.loads(body)["error"]
    assert message and "\n" not in message
    assert status.text == message
    assert "error" in status.get_attribute("class").split()
    assert cards(browser) == []
