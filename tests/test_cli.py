"""The command line: Hydra apps, run directories, one-line user errors with exit status 2."""

import io
import json
import subprocess
import sys

import numpy as np
from PIL import Image

from listener_sub import cli


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
    # what it printed (the captions' table, the file written) is in its run's log too, as plain text
    log = (out / "preview.log").read_text()
    assert f"wrote {out / 'preview.png'}" in result.stdout and f"wrote {out / 'preview.png'}" in log
    captions = [line for line in log.splitlines() if line.startswith("│   ")]
    assert len(captions) == 3 and all(line in result.stdout for line in captions)


def test_a_table_printed_into_a_pipe_keeps_each_metric_name_on_one_line():
    from listener_sub.report.tables import console, metrics_table

    metrics = {"gap": 0.5, "acc/full": 0.8, "mention/color": 1.0, "sample/gap": 0.3, "sample/acc/full": 0.7}
    summary = {
        "fixed_oracle_gap": 0.52,
        "fixed_oracle_subset": ["color"],
        "oracle_gap": 0.6,
        "transfer": {"ratio": 0.9, "in_domain_gap": 0.5},
    }
    out = io.StringIO()  # not a terminal: rich alone would assume 80 columns and wrap the long names
    console(out).print(metrics_table("listener-sub eval outputs/eval/2026-12-03", {"before": metrics}, summary))
    lines = out.getvalue().splitlines()
    for name in (
        "fixed_oracle_gap (color)",
        "transfer ratio (gap / in-domain 0.500)",
        "sample/before",
        "mention/color",
    ):
        assert any(name in line for line in lines), (name, out.getvalue())


def help_of(monkeypatch, capsys, *argv: str) -> tuple[int, str, str]:
    """`listener-sub ARGV` with --help, in this process: (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the command line sets it
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # main sets it too: restored after the test
    try:
        cli.main(list(argv))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_help_is_short_and_says_what_each_setting_does(monkeypatch, capsys):
    code, out, err = help_of(monkeypatch, capsys, "train", "--help")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) < 80
    groups = {line.split()[0] for line in lines if line.startswith("  ") and "=" not in line.split()[0]}
    assert {"experiment", "models", "data", "speaker/adapter", "listener"} <= groups
    assert "base_" not in out  # the schemas the yaml files extend are not choices
    (steps,) = [line for line in lines if line.startswith("  trainer.steps=400 ")]
    assert "optimizer steps in all" in steps  # RLConfig's own comment on the field
    (resume,) = [line for line in lines if line.startswith("  resume=false ")]
    assert "continue the run" in resume  # the command's yaml comment
    code, out, err = help_of(monkeypatch, capsys, "train", "listeners.gray.seed=5", "--help", "listeners.gray")
    assert code == 0, err
    assert "listeners.gray.seed=5" in out and "listeners.gray.perception=grayscale" in out
    code, out, _ = help_of(monkeypatch, capsys, "export", "-h")  # a required setting not set yet does not stop it
    assert code == 0 and "  out=???  " in out
    code, _, err = help_of(monkeypatch, capsys, "train", "--help", "nosuch")
    assert code == 2 and "no such node; name one of: game" in err


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
