#!/usr/bin/env bash
# The GPU check: from a fresh clone on a CUDA machine, one command that installs listener-sub, builds the embedded
# default's tiny models and measures the speaker's RL step on the chip; the numbers go to OUT_DIR/gpu_check.json.
#
#   scripts/gpu_check.sh [OUT_DIR]            (default: gpu_check)
#
# It reports, each against the chip's bf16 matmul peak measured in the same run (`listener-sub bench`):
#   real  -- `bench preset=real`: random-init ViT-B-32 CLIPs + GPT-2 124M, REAL_BOARDS x REAL_K captions a step
#   tiny  -- the embedded default's RL step and listener-CLIP training step (its models built on first use, on the
#            chip, as `listener-sub train` builds them)
#   vlm   -- `bench preset=vlm vlm.size=smolvlm-256m`: a random-init VLM speaker of SmolVLM-256M's sizes with LoRA
#   ddp   -- a 2-rank `torchrun ... train` of the default when two GPUs (or DDP=1) are there: games a second
# with games/s, seconds per phase, GFLOP a step, FLOP utilisation and peak memory.
#
# Environment (all optional):
#   PYTHON=python3         an interpreter that has listener-sub installed: no virtual environment is made
#   DEVICE=cuda            cpu runs the same check on the CPU (the test suite does, at tiny sizes)
#   REAL_BOARDS=128 REAL_K=8 VLM_BOARDS=64 VLM_K=8 STEPS=20 DDP_STEPS=50
#   NAIVE_STEPS=0          naive steps timed beside the optimized ones (one at the real size took 50 s on an H200)
#   OVERRIDES="..."        Hydra overrides added to every command (e.g. smaller pretraining recipes)
#   DDP=1                  run the 2-rank check even without two GPUs (gloo on the CPU)
#   STAGES="real tiny vlm ddp"  the stages to run (ddp still needs two GPUs or DDP=1)
set -euo pipefail

out=$(realpath -m "${1:-gpu_check}")
mkdir -p "$out"
rm -rf "$out"/{tiny,real,vlm,ddp} "$out/stage_s.txt"  # a fresh check each time
touch "$out/stage_s.txt"
start=$(date +%s)

if [[ -z "${PYTHON:-}" ]]; then
    python3 -m venv .venv-gpu-check
    .venv-gpu-check/bin/pip install -q -e .
    PYTHON=.venv-gpu-check/bin/python
fi
device=${DEVICE:-cuda}
steps=${STEPS:-20}
naive=${NAIVE_STEPS:-0}
read -r -a extra <<<"${OVERRIDES:-}"
stages=" ${STAGES:-real tiny vlm ddp} "

bench() {  # bench NAME PARTS OVERRIDE...: one `listener-sub bench` run into $out/NAME, if NAME is one of STAGES
    local name=$1 parts=$2 began=$(date +%s)
    shift 2
    [[ "$stages" == *" $name "* ]] || return 0
    echo "== $name" >&2
    "$PYTHON" -m listener_sub bench parts="$parts" device="$device" rl.steps="$steps" rl.naive_steps="$naive" \
        clip.naive_steps="$naive" \
        "hydra.run.dir=$out/$name" "$@" "${extra[@]}" >"$out/$name.log" 2>&1 || {
        tail -n 20 "$out/$name.log" >&2
        exit 1
    }
    echo "$name $(($(date +%s) - began))" >>"$out/stage_s.txt"
}

bench real [rl] preset=real real.boards="${REAL_BOARDS:-128}" real.k="${REAL_K:-8}"
bench tiny [rl,clip] preset=tiny
bench vlm [rl] preset=vlm vlm.size="${VLM_SIZE:-smolvlm-256m}" vlm.boards="${VLM_BOARDS:-64}" vlm.k="${VLM_K:-8}"

gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
if [[ "$stages" == *" ddp "* && ("$gpus" -ge 2 || "${DDP:-0}" == 1) ]]; then
    echo "== ddp (2 ranks)" >&2
    began=$(date +%s)
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node 2 -m listener_sub train device="$device" \
        trainer.steps="${DDP_STEPS:-50}" "hydra.run.dir=$out/ddp" "${extra[@]}" >"$out/ddp.log" 2>&1 || {
        tail -n 20 "$out/ddp.log" >&2
        exit 1
    }
    echo "ddp $(($(date +%s) - began))" >>"$out/stage_s.txt"
fi

"$PYTHON" - "$out" "$(($(date +%s) - start))" <<'EOF'
import json, sys
from pathlib import Path

import torch

out, wall_s = Path(sys.argv[1]), float(sys.argv[2])
report = {
    "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    "gpus": torch.cuda.device_count(),
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "wall_s": wall_s,
    "stage_s": {name: float(s) for name, s in (line.split() for line in (out / "stage_s.txt").read_text().splitlines())},
}
for name in ("real", "tiny", "vlm"):
    if (out / name / "bench.json").exists():
        results = json.loads((out / name / "bench.json").read_text())["results"]
        report[name] = {k.removeprefix("rl/"): v for k, v in results.items()}
ddp = out / "ddp" / "summary.json"
if ddp.exists():
    summary = json.loads(ddp.read_text())
    trainer = summary["config"]["trainer"]
    ranks = summary["environment"]["world_size"]
    games = summary["steps"] * ranks * trainer["boards"] * trainer["k"]  # each rank plays its own boards
    report["ddp"] = {
        "ranks": ranks,
        "steps": summary["steps"],
        "games_per_s": games / summary["wall_s/rl"],
        "wall_s/rl": summary["wall_s/rl"],
        "after/gap": summary["after"]["gap"],
    }
(out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
keys = ("optimized/games_per_s", "optimized/flop_utilisation", "optimized/peak_memory_gb", "speedup")
keys += ("clip/optimized/images_per_s", "clip/optimized/flop_utilisation")
for name in ("real", "tiny", "vlm"):
    print(name, {k: round(report[name][k], 4) for k in keys if k in report[name]} if name in report else "not run")
print("ddp", report.get("ddp", "skipped: fewer than two GPUs"))
print(f"wall {wall_s:.0f} s -> {out / 'gpu_check.json'}")
EOF
