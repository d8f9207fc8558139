"""The command line: Hydra apps, run directories, one-line user errors with exit status 2."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "listener_sub", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_preview_writes_a_grid_of_every_perception(tmp_path):
    out = tmp_path / "run"
    result = run_cli("preview", f"hydra.run.dir={out}", "scenes=3", "scale=2", "split=shifted")
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(out / "preview.png").convert("RGB"))
    # 4 perceptions side by side, 3 rows of 128-pixel tiles plus margins and captions
    assert image.shape[1] >= 4 * 128 and image.shape[0] >= 3 * 128
    assert (out / ".hydra" / "config.yaml").exists()
    # the shifted split's light background shows in the picture
    assert (np.abs(image.astype(int) - 170).max(-1) <= 2).mean() > 0.2


def test_bench_writes_render_throughput(tmp_path):
    result = run_cli("bench", f"hydra.run.dir={tmp_path}", "parts=[render]", "render.images=256", "repeats=1")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "bench.json").read_text())["results"]
    assert results["render/images_per_s"] > 0 and results["render/naive_images_per_s"] > 0


def test_bad_value_is_one_line_and_debug_shows_traceback(tmp_path):
    result = run_cli("preview", "split=dev", f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("listener-sub preview: error: the embedded world has no split 'dev'")
    assert "train, val, test, shifted" in lines[0]
    debug = run_cli("preview", "split=dev", "debug=true", f"hydra.run.dir={tmp_path / 'b'}")
    assert debug.returncode not in (0, 2) and "Traceback" in debug.stderr


def test_unknown_command_and_usage():
    result = run_cli("trian")
    assert result.returncode == 2 and "unknown command 'trian'" in result.stderr and "preview" in result.stderr
    assert run_cli().returncode == 2
    assert "preview" in run_cli("--help").stdout


def test_cfg_job_prints_the_composed_config():
    result = run_cli("preview", "--cfg", "job", "world.image_size=32")
    assert result.returncode == 0, result.stderr
    assert "image_size: 32" in result.stdout and "perceptions:" in result.stdout


def test_preview_of_a_coco_folder(tmp_path):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    for i, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
        Image.new("RGB", (80, 60), colour).save(root / "val2017" / f"{i}.jpg")
    annotations = {
        "images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(2)],
        "annotations": [{"id": i, "image_id": i, "caption": f"<b>picture {i}</b>"} for i in range(2)],
    }
    (root / "annotations" / "captions_val2017.json").write_text(json.dumps(annotations))
    out = tmp_path / "run"
    result = run_cli(
        "preview", "data=coco", f"data.root={root}", "data.image_size=32", "split=val", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(out / "preview.png").convert("RGB")).astype(int)
    assert (np.abs(image - [200, 30, 30]).max(-1) < 20).sum() > 500  # the red photo shows, in full colour
    (root / "val2017" / "1.jpg").unlink()
    broken = run_cli("preview", "data=coco", f"data.root={root}", "split=val", f"hydra.run.dir={out}")
    assert broken.returncode == 2 and "1.jpg" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1


def test_pretrain_stage_lm_writes_its_summary(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "pretrain",
        "stage=lm",
        "lm.train.steps=5",
        "lm.train.n_scenes=40",
        f"cache_dir={tmp_path / 'c'}",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "pretrain_summary.json").read_text())
    assert summary["wall_s/lm"] > 0 and abs(summary["corpus/mention/color"] - 0.5) < 0.1
    assert summary["lm/nll/right"] > 0 and 0 <= summary["lm/sample/truthful"] <= 1
    assert list((tmp_path / "c" / "lm").iterdir())  # the artifact is in the configured cache
    bad = run_cli("pretrain", "stage=everything", f"hydra.run.dir={out}")
    assert bad.returncode == 2 and "unknown stage 'everything'" in bad.stderr


def test_no_command_goes_through_a_shell():
    """Paths from configs reach child processes only as argument lists (the results sweep's `listener-sub` children):
    no shell anywhere in the package, so no config value is ever read as shell syntax."""
    import ast
    from pathlib import Path

    import listener_sub

    found = []
    for path in Path(listener_sub.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            call = node.func if isinstance(node, ast.Call) else None
            name = ast.unparse(call) if call is not None else ""
            if name in ("os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput") or (
                call is not None
                and any(
                    k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords
                )
            ):
                found.append(f"{path.name}:{node.lineno}: {name}")
    assert found == []
