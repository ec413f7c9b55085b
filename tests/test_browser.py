"""Reports opened offline in a real headless Chromium: no JavaScript error, no network request, every figure drawn."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_fit

from lit_interp.cli import main
from lit_interp.report.checkpoint import checkpoint_report

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package; Playwright's own browser download is not used
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS = "<script>alert(1)</script>"

playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: pip install -e '.[dev]'")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """A tiny digits run with a snapshot at each of its 4 steps, its run report, a checkpoint report, a hostile run."""
    root = tmp_path_factory.mktemp("browser")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        tiny_fit(
            "prev_token_digits",
            "--trainer.max_steps=4",
            "--checkpoint.every_n_train_steps=1",
            "--trainer.val_check_interval=2",
            "--data.init_args.val_batch_size=16",
        )
    finally:
        os.chdir(cwd)
    run = root / "lightning_logs/version_0"
    hostile = root / "hostile"
    shutil.copytree(run, hostile)
    for file in (hostile / "analysis").glob("step_*.json"):
        summary = json.loads(file.read_text())
        summary["task"] = XSS
        summary["heads"] = {f"<img src=x onerror=alert(2)>{head}": scores for head, scores in summary["heads"].items()}
        file.write_text(json.dumps(summary))
    main(["analyze", "--run", str(run), "--out", str(root / "run")])
    main(["analyze", "--run", str(hostile), "--out", str(root / "hostile_report")])
    checkpoint = str(run / "checkpoints/last.ckpt")
    main(
        [
            "analyze",
            "--ckpt_path",
            checkpoint,
            "--out",
            str(root / "checkpoint"),
            "--probe_batch_size=16",
            "--no_hook_mean_ablation",
        ]
    )
    # Shapes the tiny run lacks: circuits downsampled into labelled blocks, many heads, a 3-D tensor.
    # An all-NaN [layer pos] grid (patching refused): plotly cannot range it, and one failure stopped every figure.
    tensors = {f"ov_circuit.L0H{head}": torch.randn(300, 300) for head in range(6)} | {
        "by_position": torch.randn(2, 3, 50),
        "resid_pre_patching_logit_difference": torch.full((2, 6), torch.nan),
    }
    summary = {"step": 1, "task": "t", "loss": 1.0, "heads": {f"L0H{head}": {"score": head / 6} for head in range(6)}}
    summary["logit_difference_patching"] = {"clean_logit_difference": 1.0, "reason": "within the noise"}
    (root / "large").mkdir()
    (root / "large/report.html").write_text(checkpoint_report(summary, tensors, "large"))
    return {name: root / name / "report.html" for name in ("run", "hostile_report", "checkpoint", "large")}


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def open_offline(browser, path: Path):
    """The page, once every figure is drawn, and the problems seen: console errors, page errors, dialogs, requests."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console: {message.text}") if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))

    def offline(route):
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            problems.append(f"request: {route.request.url}")
            route.abort()

    page.route("**/*", offline)
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-figures=drawn]", timeout=30_000)
    return page, problems


def assert_every_figure_drawn(page) -> int:
    specs = page.locator("script.figure-spec").count()
    assert page.locator(".js-plotly-plot").count() == specs > 0
    assert page.locator(".js-plotly-plot .main-svg").count() >= specs  # plotly drew each one
    return specs


def test_checkpoint_report_draws_every_figure_offline(browser, reports):
    page, problems = open_offline(browser, reports["checkpoint"])
    assert assert_every_figure_drawn(page) >= 8
    header = page.locator("table.sortable th", has_text="prev_token_score").first
    header.click()
    assert header.get_attribute("data-order") == "ascending"
    example = page.locator("section", has=page.locator("h2", has_text="Attention on single examples")).locator(
        ".js-plotly-plot"
    )
    assert example.evaluate("div => div.layout.sliders[0].steps.length") == 8
    assert problems == []


def test_downsampled_and_generic_figures_draw_without_errors(browser, reports):
    page, problems = open_offline(browser, reports["large"])
    assert assert_every_figure_drawn(page) == 3
    assert page.get_by_text("all values NaN: within the noise").count() == 1
    assert problems == []


def test_run_report_slider_moves_the_attention_figure_to_another_step(browser, reports):
    page, problems = open_offline(browser, reports["run"])
    assert_every_figure_drawn(page)
    figure = page.locator("section", has=page.locator("h2", has_text="Attention patterns across training")).locator(
        ".js-plotly-plot"
    )
    before = figure.evaluate("div => [div.layout.sliders[0].active, JSON.stringify(div._fullData[0].z)]")
    assert before[0] == 3  # the last of 4 steps
    figure.locator(".slider-rail-rect").scroll_into_view_if_needed()
    rail = figure.locator(".slider-rail-rect").bounding_box()
    page.mouse.click(rail["x"] + 2, rail["y"] + rail["height"] / 2)  # the left end of the rail: the first step
    page.wait_for_function("div => div.layout.sliders[0].active === 0", arg=figure.element_handle())
    after = figure.evaluate("div => JSON.stringify(div._fullData[0].z)")
    assert after != before[1]
    assert figure.locator(".slider-group > .slider-label").text_content().strip() == "step 1"  # the current value
    page.locator("#log-steps").check()
    types = page.eval_on_selector_all("div.step-axis", "divs => divs.map(div => div.layout.xaxis.type)")
    assert types and set(types) == {"log"}
    assert problems == []


def test_hostile_strings_are_shown_as_text_and_never_run(browser, reports):
    page, problems = open_offline(browser, reports["hostile_report"])
    assert_every_figure_drawn(page)
    assert page.locator("dl.facts dd").first.inner_text() == XSS
    assert page.locator("img").count() == 0
    assert problems == []
