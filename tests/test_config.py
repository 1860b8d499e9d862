"""Job files and swapd.toml: valid ones load, bad ones name the file, the key and the fix."""

from __future__ import annotations

import re
import tomllib
from datetime import datetime
from pathlib import Path

import pytest

from swapd.config import (
    ConfigError,
    ServiceConfig,
    default_config_text,
    in_window,
    load_job_file,
    load_service_config,
    next_window_change,
)
from swapd.daemon.jobs import validate_job
from swapd.workspace import Workspace

REPO = Path(__file__).resolve().parents[1]


def _job(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobs" / "alice_to_bob.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_design_example_job_loads(tmp_path: Path) -> None:
    path = _job(tmp_path, """
[train]
a = "faces/alice"
b = "faces/bob"
model = "lightweight"
batch_size = 16
iterations = 100000
save_every = 250
snapshot_every = 5000
[train.options]
loss = "ssim"
[schedule]
windows = ["22:00-07:00"]
priority = 0
[export]
on = ["snapshot", "done"]
[merge]
footage = "footage/alice_to_bob"
output = "output/alice_to_bob"
""")
    job = load_job_file(path)
    assert job.kind == "train"
    assert job.train is not None and job.train.batch_size == 16
    assert job.merge is not None and job.merge.wait_for == "export"


@pytest.mark.parametrize(("text", "key", "words"), [
    ('[train]\na = "faces/a"\nb = "faces/b"\nbatch_sise = 8\n', "train.batch_sise",
     ["unknown key", "batch_size"]),
    ('[train]\na = "faces/a"\nb = "faces/b"\nbatch_size = "big"\n', "train.batch_size",
     ["integer", "'big'"]),
    ('[train]\na = "faces/a"\n', "train.b", ["required"]),
    ('[train]\na = "faces/a"\nb = "faces/b"\n[schedule]\nwindows = ["22-07"]\n',
     "schedule.windows", ["22:00-07:00"]),
    ('[schedule]\npriority = 1\n', "", ["[train] or a [merge]"]),
])
def test_bad_job_errors_name_file_key_and_expectation(tmp_path: Path, text: str, key: str,
                                                      words: list[str]) -> None:
    path = _job(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_job_file(path, shown_as="jobs/alice_to_bob.toml")
    message = str(caught.value)
    assert message.startswith("jobs/alice_to_bob.toml: ")
    assert caught.value.problems[0][0] == key
    for word in words:
        assert word in message


def test_not_toml_and_not_utf8(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_job_file(_job(tmp_path, "[train\n"))
    path = _job(tmp_path, "")
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_job_file(path)


def test_model_options_and_missing_sets_are_checked(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    (ws.faces / "a").mkdir()
    path = _job(tmp_path, '[train]\na = "faces/a"\nb = "faces/b"\nmodel = "lightweight"\n'
                          '[train.options]\nwidht = 0.5\n')
    with pytest.raises(ConfigError) as caught:
        validate_job(ws, load_job_file(path), "jobs/x.toml")
    keys = [key for key, _ in caught.value.problems]
    assert keys == ["train.options", "train.b"]
    assert "widht" in str(caught.value)
    path = _job(tmp_path, '[train]\na = "faces/a"\nb = "faces/a"\nmodel = "nosuchmodel"\n')
    with pytest.raises(ConfigError) as caught:
        validate_job(ws, load_job_file(path), "jobs/x.toml")
    assert caught.value.problems[0][0] == "train.model"
    assert "lightweight" in str(caught.value)


def test_a_missing_start_from_checkpoint_is_named(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    (ws.faces / "a").mkdir()
    job = '[train]\na = "faces/a"\nb = "faces/a"\nstart_from = "pretrained/x.pt"\n'
    with pytest.raises(ConfigError) as caught:
        validate_job(ws, load_job_file(_job(tmp_path, job)), "jobs/x.toml")
    assert caught.value.problems == [("train.start_from", "'pretrained/x.pt' does not exist "
                                      "(expected a swapd checkpoint, a model.pt, of the same "
                                      "model)")]
    # Once the job has a checkpoint of its own, the start is no longer needed.
    ws.model_dir("x").mkdir(parents=True)
    (ws.model_dir("x") / "model.pt").write_bytes(b"the job's own")
    validate_job(ws, load_job_file(_job(tmp_path, job)), "jobs/x.toml", "x")
    with pytest.raises(ConfigError):
        validate_job(ws, load_job_file(_job(tmp_path, job)), "jobs/y.toml", "y")
    (ws.root / "pretrained").mkdir()
    (ws.root / "pretrained" / "x.pt").write_bytes(b"checked when training starts")
    validate_job(ws, load_job_file(_job(tmp_path, job)), "jobs/y.toml", "y")


def test_a_cosine_schedule_needs_an_end(tmp_path: Path) -> None:
    ws = Workspace.open(tmp_path / "ws")
    (ws.faces / "a").mkdir()
    job = ('[train]\na = "faces/a"\nb = "faces/a"\niterations = {iterations}\n'
           '[train.options]\nlr_schedule = "cosine"\nwarmup = 100\n')
    path = _job(tmp_path, job.format(iterations=0))  # no target: where would it end?
    with pytest.raises(ConfigError) as caught:
        validate_job(ws, load_job_file(path), "jobs/x.toml")
    assert caught.value.problems == [("train.options", "lr_schedule = 'cosine' needs an end: "
                                      "set lr_decay_iterations or the job's iterations")]
    path = _job(tmp_path, job.format(iterations=50))
    with pytest.raises(ConfigError, match="ends at iteration 50, within the warmup"):
        validate_job(ws, load_job_file(path), "jobs/x.toml")
    validate_job(ws, load_job_file(_job(tmp_path, job.format(iterations=500))), "jobs/x.toml")


def test_the_readme_job_file_is_valid_and_shows_the_defaults() -> None:
    from swapd.config import JobFile
    from swapd.trainer.options import split_options

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S)
                if b.startswith("[train]")]
    data = tomllib.loads(block)
    job = JobFile.model_validate(data)
    assert job.train is not None
    trainer_options, model_options = split_options(job.train.model, job.train.options)
    defaults = split_options(job.train.model, {})
    for shown, default in zip((trainer_options, model_options), defaults, strict=True):
        for key in shown.model_fields_set:  # each value the README shows is the default
            assert getattr(shown, key) == getattr(default, key), key
    assert {"lr_schedule", "mask_decoder", "learn_mask"} <= set(job.train.options)


def test_default_swapd_toml_is_valid_and_commented() -> None:
    text = default_config_text()
    assert ServiceConfig.model_validate(tomllib.loads(text)) == ServiceConfig()
    # The repository's swapd.toml is the packaged one.
    assert (REPO / "swapd.toml").read_text() == text
    keys = [line.split("=")[0].strip() for line in text.splitlines()
            if "=" in line and not line.startswith("#")]
    lines = text.splitlines()
    for key in keys:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"


def test_service_config_rejects_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "swapd.toml"
    path.write_text("[dashboard]\nprot = 80\n")
    with pytest.raises(ConfigError, match=r"dashboard\.prot: unknown key"):
        load_service_config(path)


@pytest.mark.parametrize(("windows", "hour", "inside"), [
    ([], 3, True),
    (["22:00-07:00"], 23, True),
    (["22:00-07:00"], 3, True),
    (["22:00-07:00"], 12, False),
    (["09:00-17:00"], 12, True),
    (["09:00-17:00"], 17, False),
])
def test_windows(windows: list[str], hour: int, inside: bool) -> None:
    assert in_window(windows, datetime(2026, 1, 1, hour, 0)) is inside


@pytest.mark.parametrize(("windows", "now", "change"), [
    ([], (12, 0), None),
    (["00:00-00:00"], (12, 0), None),
    (["22:00-07:00"], (12, 0), (1, 22, 0)),  # waiting: the window opens tonight
    (["22:00-07:00"], (23, 30), (2, 7, 0)),  # inside: it closes tomorrow morning
    (["22:00-07:00"], (3, 0), (1, 7, 0)),
    (["09:00-12:00", "12:00-17:00"], (10, 0), (1, 17, 0)),  # windows that touch are one
    (["09:00-12:00", "14:00-17:00"], (13, 0), (1, 14, 0)),
])
def test_next_window_change(windows: list[str], now: tuple[int, int],
                            change: tuple[int, int, int] | None) -> None:
    found = next_window_change(windows, datetime(2026, 1, 1, *now))
    assert found == (None if change is None else datetime(2026, 1, change[0], *change[1:]))
