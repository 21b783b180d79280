"""Pretrained checkpoints: served from 127.0.0.1 (good, corrupted, interrupted, cached, offline), local paths,
head replacement, bad input, and the shipped checkpoints reproducing their published figures."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from local_server import RangeServer

from pointgeo import hub
from pointgeo.cli import main
from pointgeo.datamodules import SyntheticShapesDataModule
from pointgeo.download import ChecksumError, DownloadError

NAME = "tinvnn_pointnet.synthetic_z"
SHIPPED = hub.get_checkpoint(NAME)
PAYLOAD = Path(hub.fetch(NAME)).read_bytes()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[RangeServer]:
    """The shipped checkpoint served over HTTP under a registry entry that points at the local server."""
    monkeypatch.delenv("POINTGEO_OFFLINE", raising=False)
    server = RangeServer(PAYLOAD)
    monkeypatch.setitem(hub.CHECKPOINTS, "test.remote", dataclasses.replace(SHIPPED, name="test.remote", url=server.url))
    yield server
    server.close()


def test_shipped_files_match_their_registry_entries() -> None:
    for entry in hub.CHECKPOINTS.values():
        path = hub.fetch(entry.name)
        assert path.stat().st_size == entry.size and hub.sha256sum(path) == entry.sha256


def test_good_download_then_cache_hit_without_request(served: RangeServer) -> None:
    task = hub.from_pretrained("test.remote", progress=False)
    assert task.hparams.network == "tinvnn_pointnet" and not task.training
    requests = len(served.requests)
    hub.from_pretrained("test.remote", progress=False)
    assert len(served.requests) == requests
    assert [p.name for p in hub.cache_entries()] == ["test-remote-6d116047.ckpt"]


def test_corrupted_download_is_rejected_and_removed(served: RangeServer) -> None:
    served.corrupt = True
    with pytest.raises(ChecksumError, match=SHIPPED.sha256):
        hub.fetch("test.remote", progress=False)
    assert hub.cache_entries() == [] and not list(hub.checkpoint_dir().glob("*.part"))


def test_interrupted_download_resumes(served: RangeServer) -> None:
    served.cut_after = 80_000  # more than one 64 KiB block arrives before the cut
    with pytest.raises((DownloadError, ChecksumError)):
        hub.fetch("test.remote", progress=False)
    assert hub.cache_entries() == []  # no partial file is ever taken for a good one
    path = hub.fetch("test.remote", progress=False)
    assert path.read_bytes() == PAYLOAD and served.requests[-1].get("Range", "").startswith("bytes=")


def test_offline_mode_makes_no_request(served: RangeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTGEO_OFFLINE", "1")
    with pytest.raises(DownloadError, match="POINTGEO_OFFLINE"):
        hub.fetch("test.remote", progress=False)
    assert served.requests == []


def test_local_paths_and_file_urls_load(tmp_path: Path) -> None:
    path = tmp_path / "mine.ckpt"
    path.write_bytes(PAYLOAD)
    for spec in (str(path), path.as_uri()):
        assert hub.from_pretrained(spec).hparams.num_classes == 8


def test_a_different_number_of_classes_replaces_the_head_and_says_so() -> None:
    with pytest.warns(UserWarning, match="head replaced for 5 classes"):
        task = hub.from_pretrained(NAME, num_classes=5)
    assert task(dict(pos=torch.randn(2, 64, 3))).shape == (2, 5)
    original = hub.from_pretrained(NAME)
    kept = [k for k in original.state_dict() if "head.4" not in k and not k.startswith("metrics.")]
    assert all(torch.equal(original.state_dict()[k], task.state_dict()[k]) for k in kept)


def test_bad_names_and_files_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="did you mean 'tinvnn_pointnet.synthetic_z'"):
        hub.from_pretrained("tinvnn_pointnet.synthetic")
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(PAYLOAD[:1000])
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        hub.from_pretrained(str(broken))
    other = tmp_path / "other.ckpt"
    ckpt = torch.load(hub.fetch(NAME), weights_only=True)
    torch.save({**ckpt, "pointgeo": {"version": "0.1.0", "task": "generation"}}, other)
    with pytest.raises(ValueError, match="is a .generation. checkpoint; pointgeo rebuilds classification, segmentation"):
        hub.from_pretrained(str(other))
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        hub.from_pretrained(str(tmp_path / "missing.ckpt"))


def test_weights_that_do_not_fit_the_rebuilt_network_are_refused(tmp_path: Path) -> None:
    ckpt = torch.load(hub.fetch(NAME), weights_only=True)
    first = next(iter(ckpt["state_dict"]))
    cases = {
        "unexpected net.extra.weight$":
            {**ckpt, "state_dict": {**ckpt["state_dict"], "net.extra.weight": torch.eye(3)}},
        f"missing {first}$": {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k != first}},
        r"other shape net\.backbone\.head\.4\.bias, net\.backbone\.head\.4\.weight$":
            {**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "num_classes": 5}},
        "hyper-parameters do not build a ClassificationTask":
            {**ckpt, "hyper_parameters": {**ckpt["hyper_parameters"], "dropout_of_v9": 0.5}},
    }
    for i, (problem, bad) in enumerate(cases.items()):
        path = tmp_path / f"bad{i}.ckpt"
        torch.save(bad, path)
        with pytest.raises(ValueError, match=problem):
            hub.from_pretrained(str(path))


def test_segmentation_checkpoints_load_and_refuse_a_new_head(tmp_path: Path) -> None:
    from pointgeo.tasks import PartSegmentationTask

    seg = PartSegmentationTask("pointnet_seg", num_classes=2, num_parts=4, category_parts=[[0, 1], [2, 3]],
                               network_kwargs={"channels": [16, 32], "head": [16]})
    path = tmp_path / "seg.ckpt"
    torch.save({"state_dict": seg.state_dict(), "hyper_parameters": dict(seg.hparams),
                "pointgeo": {"version": "0.1.0", "task": "segmentation"}}, path)
    task = hub.from_pretrained(str(path))
    assert isinstance(task, PartSegmentationTask) and not task.training
    assert all(torch.equal(v, task.state_dict()[k]) for k, v in seg.state_dict().items())
    with pytest.raises(ValueError, match="only classification heads can be replaced"):
        hub.from_pretrained(str(path), num_classes=3)


@pytest.mark.parametrize("name", sorted(n for n, c in hub.CHECKPOINTS.items() if c.dataset == "synthetic"))
def test_shipped_checkpoints_reproduce_their_published_accuracies(name: str) -> None:
    task = hub.from_pretrained(name)
    settings = {k: v for k, v in torch.load(hub.fetch(name), weights_only=True)["datamodule_hyper_parameters"].items()
                if not k.startswith("_")}
    dm = SyntheticShapesDataModule(**settings)
    accuracy = {}
    for mode in ("none", "so3"):
        dm.set_test_rotation(mode)
        with torch.no_grad():
            hits = [(task(b).argmax(-1) == b["label"]).float() for b in dm.test_dataloader()]
        accuracy[f"test/acc/{mode}"] = torch.cat(hits).mean().item()
    for key, value in hub.get_checkpoint(name).metrics.items():
        assert accuracy[key] == pytest.approx(value, abs=0.006)


def test_cli_download_models_and_cache(capsys: pytest.CaptureFixture, served: RangeServer) -> None:
    main(["download", "test.remote"])
    main(["models", "--pretrained", "tinvnn*"])
    main(["cache", "list"])
    out = capsys.readouterr().out
    assert "test-remote-6d116047.ckpt" in out and "test/acc/so3 99.2 %" in out
    main(["cache", "clear"])
    assert hub.cache_entries() == []
    with pytest.raises(SystemExit, match="did you mean"):
        main(["download", "pointnet.synthetic"])


def _no_lightning_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make Lightning's own remote loading (which unpickles in full) fail loudly if it were ever reached."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Lightning loaded a remote checkpoint itself")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


def test_remote_ckpt_path_is_fetched_verified_and_tested_locally(served: RangeServer, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    _no_lightning_http(monkeypatch)
    url = f"{served.url}#sha256={SHIPPED.sha256}"
    main(["test", "--config", SHIPPED.config, "--ckpt_path", url, "--trainer.default_root_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false", "--trainer.logger", "false", "--trainer.limit_test_batches", "2"])
    out = capsys.readouterr().out
    assert "test/acc" in out and any(r.get("method") != "HEAD" for r in served.requests)
    cached = [p for p in hub.cache_entries() if p.name.startswith("url-")]
    assert len(cached) == 1 and cached[0].name.endswith("-file.ckpt") and cached[0].read_bytes() == PAYLOAD
    assert hub.resolve_ckpt_path(url) == str(cached[0])  # cached: no second download
    assert hub.resolve_ckpt_path("last") == "last" and hub.resolve_ckpt_path(None) is None
    assert hub.resolve_ckpt_path(str(tmp_path / "a.ckpt")) == str(tmp_path / "a.ckpt")
    with pytest.raises(ChecksumError):
        hub.resolve_ckpt_path(f"{served.url.replace('file.bin', 'file.bin?v=2')}#sha256={'0' * 64}")


def test_remote_checkpoint_whose_pickle_would_run_code_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    import os

    marker = tmp_path / "code-was-run"

    class Payload:
        def __reduce__(self) -> tuple:
            return os.mkdir, (str(marker),)

    crafted = tmp_path / "crafted.ckpt"
    ckpt = torch.load(hub.fetch(NAME), weights_only=True)
    torch.save({**ckpt, "callbacks": Payload()}, crafted)
    monkeypatch.delenv("POINTGEO_OFFLINE", raising=False)
    server = RangeServer(crafted.read_bytes())
    _no_lightning_http(monkeypatch)
    try:
        with pytest.raises(ValueError, match="refused the checkpoint .* weights_only=True") as info:
            main(["test", "--config", SHIPPED.config, "--ckpt_path", server.url,
                  "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"])
    finally:
        server.close()
    assert type(info.value).__name__ == "DatasetFileError"
    assert not marker.exists() and hub.cache_entries() == []  # nothing ran, nothing unsafe stays in the cache
    torch.load(crafted, weights_only=False)  # what a full unpickling (Lightning's default for URLs) would have done
    assert marker.is_dir()
