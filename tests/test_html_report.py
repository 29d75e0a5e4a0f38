"""evaluate.py --report html on a real tiny fleet and a real tiny model: one self-contained file, and in
headless Chromium a table of one row per entity that sorts, with every figure drawn."""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

import evaluate
import train
from evaluation.fleet_report import FLEET_REPORT_METRICS
from tests.test_fleet import ROWS, train_tiny_fleet, write_fleet_data
from tests.tiny import TINY_TRAIN_FLAGS

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)  # fmt: skip
WIDE_BASELINES = "pca,random,iforest,sarfraz_l2"
TRAINED = [name for name, (n_train, _) in ROWS.items() if n_train > 100]  # stub is skipped in training


class Page(HTMLParser):
    """What a test reads from a page: the entity table's rows (their cells' sort keys) and every URL."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.urls: list[str] = []
        self.images = 0
        self.drawn: re.Match | None = None  # "N of M figures drawn", written by the page's script
        self._in_table = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[key] for key in ("src", "href") if key in attrs]
        self.images += tag == "img"
        if tag == "table" and attrs.get("id") == "entities":
            self._in_table = True
        elif self._in_table and tag == "tr":
            self.rows.append([])
        elif self._in_table and tag == "td":
            self.rows[-1].append(attrs["data-sort"])

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.rows = [row for row in page.rows if row]  # the header rows hold no td
    return page


@pytest.fixture(scope="module")
def fleet_report(tmp_path_factory):
    data, out = train_tiny_fleet(tmp_path_factory.mktemp("report"))
    common = ["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), "--device", "cpu",
              "--report", "html"]  # fmt: skip
    assert evaluate.main([*common, "--per-entity", "--baselines", "pca,random", "--jobs", "1"]) == 0
    assert evaluate.main([*common, "--entity", "east", "--baselines", "pca"]) == 0
    wide = out / "wide"  # more baselines than a screen holds
    assert evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(wide), "--device", "cpu",
                          "--report", "html", "--checkpoint", str(out / "CUSTOM_fleet.pth"), "--per-entity",
                          "--baselines", WIDE_BASELINES, "--jobs", "1"]) == 0  # fmt: skip
    return {"fleet": out / "CUSTOM_fleet_report.html", "single": out / "CUSTOM_east_report.html",
            "wide": wide / "CUSTOM_fleet_report.html"}  # fmt: skip


def test_the_report_is_one_file_that_fetches_nothing(fleet_report):
    for path in fleet_report.values():
        text = path.read_text()
        page = parse(text)
        assert all(url.startswith(("data:image/png;base64,", "#")) for url in page.urls)
        assert not re.search(r"<link|<script [^>]*src=|@import|url\(", text)
    fleet = parse(fleet_report["fleet"].read_text())
    assert [row[0] for row in fleet.rows] == TRAINED and fleet.images == len(TRAINED)
    # entity, then the report's metrics x 3 methods, then the incident count and the highest severity
    assert all(len(row) == 1 + len(FLEET_REPORT_METRICS) * 3 + 2 for row in fleet.rows)
    assert len(parse(fleet_report["single"].read_text()).rows) == 1


def test_beside_many_baselines_the_table_shows_the_model_and_the_strongest_named(fleet_report):
    page = parse(fleet_report["wide"].read_text())
    assert [row[0] for row in page.rows] == TRAINED
    assert all(len(row) == 1 + len(FLEET_REPORT_METRICS) * 2 + 2 for row in page.rows)  # not x 5 methods
    entities = pd.read_csv(fleet_report["wide"].parent / "CUSTOM_fleet_entities.csv")
    for row in page.rows:
        baselines = entities[(entities.entity == row[0]) & (entities.method != "model")]
        strongest = baselines.loc[baselines.roc_auc.idxmax()]
        # ROC-AUC is the first metric: the model's value, then the strongest baseline's as its sort key
        assert float(row[2]) == pytest.approx(strongest.roc_auc, abs=1e-5)
    assert "Strongest baseline: the highest of the 4 baselines" in fleet_report["wide"].read_text()
    assert "Strongest baseline" not in fleet_report["fleet"].read_text()


def test_the_single_model_page_says_what_its_threshold_read_as_the_console_does(fleet_report):
    text = fleet_report["single"].read_text()
    assert "TRAIN and the TEST scores before it" in text and "no test data used" not in text


def rendered(path, fragment: str = "") -> Page:
    """The DOM after the page's scripts ran in headless Chromium."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", f"{path.as_uri()}{fragment}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    page = parse(done.stdout)
    page.drawn = re.search(r'id="figures-drawn">(\d+) of (\d+) figures drawn', done.stdout)
    return page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (apt-get install chromium)")
def test_chromium_draws_every_figure_and_sorts_the_table(fleet_report):
    page = rendered(fleet_report["fleet"])
    assert len(page.rows) == len(TRAINED)
    assert page.drawn and page.drawn.group(1) == page.drawn.group(2) == str(len(TRAINED))
    # Columns go metric by metric, then method by method: 1-3 ROC-AUC, 4 the model's PR-AUC.
    for column, fragment, descending in ((4, "#sort=4", True), (4, "#sort=4-asc", False), (0, "#sort=0-asc", False)):
        keys = [row[column] for row in rendered(fleet_report["fleet"], fragment).rows]
        values = [float(key) for key in keys] if column else keys
        assert values == sorted(values, reverse=descending)
    single = rendered(fleet_report["single"])
    assert len(single.rows) == 1 and single.drawn.group(1) == "1"


def test_labelled_segments_are_shown_at_test_times_like_the_incidents(tmp_path):
    # A SCADA export has a time column: the incidents show times, so the labelled faults they are read against
    # must too, not row positions an operator cannot place.
    data = write_fleet_data(tmp_path)
    times = {}
    for split in ("train", "test"):
        values = np.load(data / f"{split}_data.npy")
        times[split] = pd.date_range("2026-01-01" if split == "train" else "2026-03-01", periods=len(values),
                                     freq="10min", tz="UTC+01:00").strftime("%Y-%m-%dT%H:%M:%S%z")  # fmt: skip
        frame = pd.DataFrame(values, columns=["wind", "power", "gearbox"]).assign(timestamp=times[split])
        frame[["timestamp", "wind", "power", "gearbox"]].to_csv(data / f"{split}_data.csv", index=False)
        (data / f"{split}_data.npy").unlink()
    labels = np.load(data / "test_labels.npy")
    out = tmp_path / "out"
    assert train.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--per-entity", "--entities", "east",
                       "--jobs", "1", "--output-dir", str(out), *TINY_TRAIN_FLAGS]) == 0  # fmt: skip
    assert evaluate.main(["--dataset", "CUSTOM", "--data-dir", str(data), "--output-dir", str(out), "--device", "cpu",
                          "--report", "html", "--per-entity", "--baselines", "pca", "--jobs", "1"]) == 0  # fmt: skip
    east = np.flatnonzero(labels[: ROWS["east"][1]])  # east's TEST rows come first
    shown = f"{times['test'][east[0]]}&ndash;{times['test'][east[-1]]}"
    assert f"1 labelled segment:\n{shown}</p>" in (out / "CUSTOM_fleet_report.html").read_text()
