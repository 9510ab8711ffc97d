"""inversa serve: the page's jobs on the embedded model, and the page itself driven in headless Chromium."""
import importlib.util
import os
import shutil
import socket
import time

import numpy as np
import pytest

from inversa import Inversion
from inversa.cli import serve
from inversa.cli.main import main
from inversa.core.errors import InversaError

CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def embedded():
    from inversa import load_model
    from inversa.tiny import default_model_path

    return load_model(default_model_path())


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    return serve.example_images(str(tmp_path_factory.mktemp("examples")))


def test_option_table_follows_the_signature():
    assert serve.option_rows("fixed_point") == [
        ["iters", "10", "integer >= 1"], ["tol", "1e-10", "number >= 0.0"],
        ["variant", "anderson", "one of plain | average | anderson"], ["depth", "4", "integer >= 1"],
        ["average_from", "1", "integer >= 1"]]
    rows = {row[0]: row for row in serve.option_rows("preciseinv")}
    assert rows["eta"] == ["eta", "None", "number >= 0.0 or None"]  # None: each solver's own rule
    assert rows["max_iters"] == ["max_iters", "None", "integer >= 1 or None"]
    assert rows["warm_start"] == ["warm_start", "True", "True | False"]


def test_option_table_reads_back_only_what_changed_and_checks_it():
    rows = serve.option_rows("fixed_point")
    rows[0][1], rows[2][1] = "3", "plain"
    assert serve.options_from_rows("fixed_point", rows) == {"iters": 3, "variant": "plain"}
    rows[0][1] = "-3"
    with pytest.raises(InversaError, match=r"^fixed_point option iters must be >= 1; got -3$"):
        serve.options_from_rows("fixed_point", rows)


def test_jobs_invert_download_reconstruct_edit_interpolate(embedded, examples, tmp_path):
    out = serve.invert_job(embedded, examples["astronaut"], "", "ddim", 2, 1.0, "model's own",
                           serve.option_rows("ddim"), str(tmp_path))
    assert [r[0] for r in serve.metric_rows(out["metrics"])] == [
        "PSNR (dB)", "SSIM", "latent MSE", "VAE ceiling (dB)", "time (s)", "NFE", "terminal alpha_T"]
    assert out["metrics"]["nfe"] == 2 and out["reconstruction"].shape == out["error"].shape == (192, 192, 3)
    inv = Inversion.load(out["file"])
    assert (inv.method, inv.num_steps, inv.trajectory) == ("ddim", 2, None)
    # the downloaded file regenerates exactly the page's reconstruction
    assert np.array_equal(serve.reconstruct_job(embedded, out["file"]), out["reconstruction"])
    edited = serve.edit_job(embedded, examples["circle"], "a red circle", "a green circle", "ddim", 6, 7.5, 0.4, "",
                            embedded=True)
    centre = slice(72, 120)  # the circle, in the 192 px pictures
    red, green = (edited[k][centre, centre].reshape(-1, 3).mean(0) for k in ("source", "edited"))
    assert red[0] > 2 * red[1] and green[1] > 2 * green[0]  # the red circle came out green
    assert edited["notes"] == ["prompts in the embedded model's template: 'a large red circle on a blue background, "
                               "center' -> 'a large green circle on a blue background, center'"]
    assert {k: edited[k].shape for k in ("source", "edited", "difference")} == dict.fromkeys(
        ("source", "edited", "difference"), (192, 192, 3))
    frames, _ = serve.interpolate_job(embedded, examples["astronaut"], examples["chelsea"], "0, 1", "ddim", 2)
    assert [caption for _, caption in frames] == ["alpha = 0", "alpha = 1"]


def test_jobs_refuse_bad_input_in_one_line(embedded, examples, monkeypatch, tmp_path):
    with pytest.raises(InversaError, match=r"^upload or pick the image first$"):
        serve.invert_job(embedded, None, "", "ddim", 2, 1.0, "model's own", [], "unused")
    with pytest.raises(InversaError, match=r"^alphas must be numbers in \[0, 1\] separated by spaces; got 'half'$"):
        serve.interpolate_job(embedded, examples["astronaut"], examples["chelsea"], "half", "ddim", 2)
    with pytest.raises(InversaError, match=r"^upload an inversion \(.safetensors\) first$"):
        serve.reconstruct_job(embedded, None)
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    with pytest.raises(InversaError, match=r"notes.png is not a readable image \(unknown or corrupt format\)$"):
        serve.invert_job(embedded, str(not_an_image), "", "ddim", 2, 1.0, "model's own", [], "unused")
    monkeypatch.setattr(serve, "UPLOAD_MEGAPIXELS", 0.01)
    with pytest.raises(InversaError, match=r"^image A has 0 megapixels, over the page's 0.01: resize it first$"):
        serve.interpolate_job(embedded, examples["astronaut"], examples["chelsea"], "0", "ddim", 2)
    monkeypatch.setattr(serve, "MAX_UPLOAD_MB", 0)
    with pytest.raises(InversaError, match=r"^the image is 0 MB, over the 0 MB upload cap$"):
        serve.edit_job(embedded, examples["circle"], "a", "b", "ddim", 2, 7.5, 0.4, "", embedded=True)


def test_serve_without_the_ui_extra_says_how_to_get_it(monkeypatch, capsys):
    monkeypatch.setitem(__import__("sys").modules, "gradio", None)  # as if not installed
    assert main(["serve"]) == 2
    assert capsys.readouterr().err == f"inversa: error: {serve.EXTRA_HINT}\n"
    assert main(["serve", "--port", "70000"]) == 2
    assert "--port must be in 1..65535; got 70000" in capsys.readouterr().err


# the page in a real browser -------------------------------------------------------------------------------------------

def _browser_missing() -> str | None:
    for module in ("gradio", "selenium"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[ui]')"
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            return f"{path} is absent (apt-get install -y {package})"
    return None


@pytest.fixture(scope="module")
def browser(embedded, tmp_path_factory):
    """The page on a free loopback port and a headless Chromium (system chromedriver: nothing is downloaded)."""
    reason = _browser_missing()
    if reason:  # CI installs all of it (.ci/run): there a missing piece is a failure, not a skip
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    env = pytest.MonkeyPatch()
    env.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    env.setenv("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers online
    page, workdir = serve.build(embedded, "embedded model", embedded=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, allowed_paths=[workdir],
                quiet=True, footer_links=[])
    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--disable-background-networking"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.get(f"http://127.0.0.1:{port}/")
    yield driver, downloads, page
    driver.quit()
    page.close()
    env.undo()


def _wait(driver, css: str, timeout: float = 60, text: str | None = None):
    """The first element matching ``css`` (holding ``text``) once it shows, or a failure naming it."""
    from selenium.webdriver.common.by import By

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = [e for e in driver.find_elements(By.CSS_SELECTOR, css)
                 if e.is_displayed() and (text is None or text in e.text)]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"{css} {'with ' + repr(text) if text else ''} did not appear in {timeout} s")


def _upload(driver, component: str, path: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{component} input[type=file]").send_keys(path)


@pytest.mark.slow
def test_page_inverts_downloads_and_edits_in_chromium(browser, examples):
    from selenium.webdriver.common.by import By

    driver, downloads, page = browser
    jobs = {fn.name: fn for fn in page.fns.values() if fn.name.startswith("do_")}  # one queue: a job at a time
    assert sorted(jobs) == ["do_edit", "do_interpolate", "do_invert", "do_reconstruct"]
    assert {(fn.concurrency_id, fn.concurrency_limit) for fn in jobs.values()} == {("model", 1)}
    assert [name for name, fn in sorted(jobs.items()) if fn.tracks_progress] == ["do_edit", "do_interpolate", "do_invert"]
    _wait(driver, "#invert-button").click()  # no image yet: a one-line message, no traceback
    assert "upload or pick the image first" in _wait(driver, ".toast-body", text="upload").text
    _upload(driver, "invert-image", examples["astronaut"])
    _wait(driver, "#invert-image img")
    driver.find_element(By.ID, "invert-button").click()
    for figure in ("#invert-reconstruction img", "#invert-error img", "#invert-plot img"):
        _wait(driver, figure)
    assert "PSNR (dB)" in _wait(driver, "#invert-metrics", text="PSNR").text
    _wait(driver, "#invert-download a[download='inversion.safetensors']").click()
    path = downloads / "inversion.safetensors"
    end = time.monotonic() + 30
    while not path.exists() and time.monotonic() < end:
        time.sleep(0.2)
    inv = Inversion.load(str(path))
    assert (inv.method, inv.num_steps) == (serve.PAGE_METHOD, serve.PAGE_STEPS)
    _upload(driver, "reconstruct-file", str(path))  # and back: the saved inversion regenerates its image
    _wait(driver, "#reconstruct-file a[download='inversion.safetensors']")
    driver.find_element(By.ID, "reconstruct-button").click()
    _wait(driver, "#reconstruct-image img")
    if os.environ.get("INVERSA_SERVE_SCREENSHOT"):  # the README's picture
        driver.execute_script("document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click())")
        driver.set_window_size(1280, 1400)
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(1)
        driver.save_screenshot(os.environ["INVERSA_SERVE_SCREENSHOT"])

    _wait(driver, "button[role=tab]", text="Edit").click()
    _upload(driver, "edit-image", examples["circle"])
    _wait(driver, "#edit-image img")
    driver.find_element(By.ID, "edit-button").click()
    for name in ("source", "edited", "difference"):
        _wait(driver, f"#edit-{name} img")
    assert "prompts in the embedded model's template" in _wait(driver, ".toast-body", text="template").text


@pytest.mark.slow
def test_page_shows_a_bad_upload_as_its_one_line(browser, tmp_path):
    """Random bytes as the image, and a damaged inversion: the page shows the reader's one line, no generic error."""
    driver, _, _ = browser
    driver.refresh()
    junk = tmp_path / "junk.png"
    junk.write_bytes(np.random.default_rng(3).bytes(4096))
    _wait(driver, "button[role=tab]", text="Invert").click()
    _upload(driver, "invert-image", str(junk))
    time.sleep(1)
    _wait(driver, "#invert-button").click()
    toast = _wait(driver, ".toast-body", text="junk.png").text
    assert "junk.png is not a readable image (unknown or corrupt format)" in toast and "exception" not in toast.lower()
    driver.execute_script("document.querySelectorAll('[data-testid=toast-close]').forEach(b => b.click())")
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    _upload(driver, "reconstruct-file", str(damaged))
    _wait(driver, "#reconstruct-file a[download='damaged.safetensors']")
    driver.find_element("id", "reconstruct-button").click()
    toast = _wait(driver, ".toast-body", text="damaged.safetensors").text
    assert "damaged.safetensors is not a readable inversion file (SafetensorError)" in toast
    assert "exception" not in toast.lower() and "junk.png" not in toast
