"""Flow commands refuse a bad argument before importing Prefect, torch or open_clip
(flows.precheck): the signature the CLI parses is the flow's own, and a refusal costs well
under 3 s of CPU time (measured on the child process, not the wall clock)."""

from __future__ import annotations

import inspect
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_light_commands_have_the_flows_signatures_and_help():
    from flows import commands, precheck

    for name, (_, _, _, _, attr) in precheck.FLOWS.items():
        light, real = getattr(precheck, name), getattr(commands, attr)
        assert inspect.signature(light) == inspect.signature(real), name
        assert light.__doc__ == real.__doc__, name
    for name in ("run", "ablation", "dataset", "analyse"):  # read from the source, not the fallback
        assert getattr(getattr(precheck, name), "checks_first", False), name


def test_model_names_without_open_clip_are_open_clips_own_list():
    import open_clip

    from clipgeo.models import register_configs
    from flows.checks import model_configs

    register_configs()
    assert sorted(model_configs()) == sorted(open_clip.list_models())


def _cpu_run(args, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.mark.parametrize("case", ["dataset-missing-folder", "dataset-missing-captions", "dataset-unknown-model",
                                  "dataset-siglip-offline", "run-unknown-model", "run-bad-objective-list"])
def test_a_bad_argument_fails_in_under_3_s_of_cpu(tmp_path, case):
    caps = tmp_path / "captions.csv"
    caps.write_text("image,caption\n")
    imgs = tmp_path / "images"
    imgs.mkdir()
    home = tmp_path / "home"
    args, expect = {
        "dataset-missing-folder": (["dataset", "folder", str(caps), "--image-dir", str(tmp_path / "nope"),
                                    "--models", "ViT-B-32", "--home", str(home)], "nope"),
        "dataset-missing-captions": (["dataset", "coco", str(tmp_path / "gone.json"), "--image-dir", str(imgs),
                                      "--models", "ViT-B-32", "--home", str(home)], "gone.json"),
        "dataset-unknown-model": (["dataset", "folder", str(caps), "--image-dir", str(imgs), "--models",
                                   "ViT-B-99-Nope", "--home", str(home)], "ViT-B-99-Nope"),
        "dataset-siglip-offline": (["dataset", "folder", str(caps), "--image-dir", str(imgs), "--models",
                                    "ViT-B-16-SigLIP", "--home", str(home)], "timm/ViT-B-16-SigLIP"),
        "run-unknown-model": (["run", "--models", "NoSuchModel", "--home", str(home)], "NoSuchModel"),
        "run-bad-objective-list": (["run", "--objectives", "infonce", "bogus", "--home", str(home)], "bogus"),
    }[case]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_HOME": str(tmp_path / "prefect"),
           "HF_HUB_CACHE": str(tmp_path / "empty-hf-cache")}
    out, cpu = _cpu_run(args, env)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], out.stderr[-2000:]
    assert cpu < 3.0, (case, cpu)
    assert not home.exists() or not (home / "catalog.duckdb").exists()


def test_a_hugging_face_tokenizer_is_checked_before_any_work(tmp_path, monkeypatch):
    """SigLIP's tokenizer comes from the Hugging Face hub: without its package or its cached
    files the check says which is missing and how to provide it, in one line."""
    import importlib.util

    from flows import checks

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    has_transformers = importlib.util.find_spec("transformers") is not None
    with pytest.raises(checks.BadInput) as err:
        checks.check_model("ViT-B-16-SigLIP")
    msg = str(err.value)
    assert "\n" not in msg and "timm/ViT-B-16-SigLIP" in msg and "HF_HUB_OFFLINE=1" in msg
    assert str(tmp_path / "hub") in msg and ("transformers package" in msg) == (not has_transformers)
    snap = tmp_path / "hub" / "models--timm--ViT-B-16-SigLIP" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "tokenizer_config.json").write_text("{}")
    if has_transformers:
        checks.check_model("ViT-B-16-SigLIP")  # files cached and the package present: accepted
    else:
        with pytest.raises(checks.BadInput) as err:
            checks.check_model("ViT-B-16-SigLIP")
        assert "transformers package" in str(err.value) and "local Hugging Face cache" not in str(err.value)
    checks.check_model("ViT-B-32")  # a model with open_clip's own tokenizer needs none of it
