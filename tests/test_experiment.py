"""effnet/experiment.py: the DVCLive stand-in writes what DVCLive writes, a stage's logger falls back to it, and
the multi-seed loop keeps finished seeds across an interruption."""

import dataclasses
import json
import shutil
import sys

import pytest

from effnet import experiment
from effnet.config import TrainConfig
from effnet.experiment import PlainLive, live_callback, open_logger
from effnet.models import ModelSpec


def _log_two_epochs(live):
    log = live_callback(live)
    log(1, {"train/loss": 4.5, "val/top1": 0.125, "lr": 0.1})
    log(2, {"train/loss": 3.25, "val/top1": 0.25, "lr": 0.0})
    live.end()


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in root.rglob("*")
        if p.is_file() and p.suffix in (".tsv", ".json")
    }


def _dvclive(directory):  # what the training stages pass as `open_live`
    from dvclive import Live

    return Live(str(directory), resume=False, dvcyaml=False, save_dvc_exp=False)


def test_plain_live_writes_dvclive_layout(tmp_path):
    real, plain = tmp_path / "real", tmp_path / "plain"
    _log_two_epochs(open_logger(_dvclive, real, {"model": {"name": "b0"}}))
    _log_two_epochs(PlainLive(plain))
    real_files, plain_files = _files(real), _files(plain)
    tsv = sorted(k for k in real_files if k.endswith(".tsv"))
    assert tsv == ["plots/metrics/lr.tsv", "plots/metrics/train/loss.tsv", "plots/metrics/val/top1.tsv"]
    for name in tsv:
        rows = lambda text: [line.split("\t")[:2] for line in text.strip().splitlines()]  # noqa: E731
        assert rows(plain_files[name]) == rows(real_files[name]), name
    assert json.loads(plain_files["metrics.json"]) == json.loads(real_files["metrics.json"])


def test_without_dvclive_the_stand_in_logs(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "dvclive", None)  # as on the bare GPU machine: `import dvclive` fails
    live = open_logger(_dvclive, tmp_path / "live", {"a": 1})
    assert isinstance(live, PlainLive)
    _log_two_epochs(live)
    rows = (tmp_path / "live/plots/metrics/val/top1.tsv").read_text().splitlines()
    assert rows == ["step\ttop1", "0\t0.125", "1\t0.25"]
    assert (tmp_path / "live/params.yaml").read_text() == "a: 1\n"


def test_no_logger_given_is_the_stand_in(tmp_path):
    assert isinstance(open_logger(None, tmp_path / "live", {}), PlainLive)


def test_a_rerun_restores_the_finished_seeds_and_trains_only_the_rest(tmp_path, monkeypatch):
    """The multi-seed loop's keep: seed 0 finished, seed 1 interrupted, DVC removed the outputs, the rerun."""
    spec = ModelSpec(name="tiny", arch="efficientnet", resolution=16, width=0.25, depth=0.34, dropout=0.1)
    cfg = TrainConfig(epochs=1, batch_size=25, seeds=2)
    trained, interrupt = [], [True]

    def one_seed(spec, cfg, *, out, live_dir, **kwargs):  # what training a seed leaves behind, without training
        if cfg.seed == 1 and interrupt[0]:
            raise KeyboardInterrupt
        trained.append(cfg.seed)
        for directory, name in ((out, "model.pt"), (live_dir, "metrics.json")):
            directory.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(f"seed {cfg.seed}")

    monkeypatch.setattr(experiment, "_train_and_save_seed", one_seed)
    where = {
        "data": tmp_path / "data",
        "out": tmp_path / "models/tiny",
        "live_dir": tmp_path / "live/tiny",
        "checkpoints": tmp_path / "ck/tiny",
    }
    with pytest.raises(KeyboardInterrupt):
        experiment.train_and_save(spec, cfg, **where)
    assert trained == [0] and (tmp_path / "ck/tiny_seeds/seed0/fingerprint").is_file()
    shutil.rmtree(tmp_path / "models"), shutil.rmtree(tmp_path / "live")  # what dvc repro does before rerunning

    interrupt[0] = False
    experiment.train_and_save(spec, cfg, **where)
    assert trained == [0, 1]  # seed 0 restored, not trained again
    assert (tmp_path / "models/tiny/model.pt").read_text() == "seed 0"
    assert (tmp_path / "live/tiny/metrics.json").read_text() == "seed 0"
    assert (tmp_path / "models/tiny/seed1/model.pt").read_text() == "seed 1"
    assert not (tmp_path / "ck/tiny_seeds").exists()  # every seed saved: the keep is gone

    trained.clear()  # other settings: nothing kept applies
    experiment.train_and_save(spec, dataclasses.replace(cfg, lr=cfg.lr * 2), **where)
    assert trained == [0, 1]
