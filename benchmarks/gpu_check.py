"""The GPU check, in one command, within a time budget (``--budget``), on a machine that may download nothing.

    python benchmarks/gpu_check.py [--out DIR] [--wheelhouse DIR] [--budget 480]
    python benchmarks/gpu_check.py --dry-run [--torch-python PATH] [--wheelhouse DIR]   # rehearsal on a CPU
    python benchmarks/gpu_check.py --make-wheelhouse DIR [--python-version 3.12]        # beforehand, with PyPI

It expects JAX with a GPU plugin, PyTorch and torchvision, flax, optax and orbax-checkpoint installed,
and touches none of them: jaxcnn is installed with ``pip install --no-deps --target`` into a folder of
its own (``--no-deps`` also passes over jaxcnn's pin of jax, so that a jax newer than the pin can be
checked), put first on the ``PYTHONPATH`` of the child processes. Packages the
stages need that the machine may lack (grain, safetensors, tensorboardX, pytest, scikit-learn,
matplotlib) are installed the same way from ``--wheelhouse`` where they are missing; a stage whose
needs stay unmet is skipped with a line saying which. Then, within ``--budget`` seconds, writing a
log per stage and ``gpu_check.json`` to ``--out`` (default ``$OUT``):

  parity          tests/test_parity.py on the GPU at matmul precision ``highest`` (the stored torchvision
                  references, relative error <= 1e-4)
  loop_transfers  tests/test_loop_transfers.py on the GPU, where the device-to-host transfer guard is real
  agreement       one ResNet-18 train step on the GPU against the CPU reference (benchmarks/train_agreement.py,
                  which states the tolerances)
                  (these three run side by side, JAX's memory grown on demand)
  bench           jaxcnn bench resnet50 vgg16 alexnet googlenet --mode both --dtype bfloat16 --vs torch at
                  the GPU's default batches, PyTorch eager and channels-last: bench.json, bench.csv
  profile         a jax.profiler trace of ResNet-50's bfloat16 train step (trace/), if 90 s are left
  torch_compile   the same bench of ResNet-50 with torch.compile too, if 150 s are left (its first compiles
                  take a minute or more per model and mode: all four do not fit the budget; ``--torch-compile``
                  puts them in the bench stage for a longer one)

The stages run in this Python with the folder ``pip install --target`` filled first on their path, from
a temporary folder (the bench) or the repository (the tests, which import the repository's copy).
Timings: one GPU, the compilation cache off (compile times are cold).

``--dry-run`` does all of it on the CPU (small sizes; the agreement's test side is the CPU fast path)
with ``tensorflow_datasets``, ``grain``, ``tensorboardX`` and ``safetensors`` made unimportable
(``benchmarks/import_block.py``, ``--block``), so the import paths are known to work up to the device.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ("resnet50", "vgg16", "alexnet", "googlenet")
MAY_BE_MISSING = ("tensorflow_datasets", "grain", "tensorboardX", "safetensors")
# what each stage imports beyond JAX, flax, optax, orbax, numpy and PIL
NEEDS = {"parity": ("pytest", "safetensors"), "loop_transfers": ("pytest", "grain", "sklearn", "matplotlib"),
         "agreement": (), "bench": ("torch", "torchvision"), "profile": ()}
# the distributions that give each module, its dependencies that JAX, flax, orbax or torch do not bring
WHEELS = {"grain": ("grain", "array-record", "cloudpickle", "portpicker"), "safetensors": ("safetensors",),
          "tensorboardX": ("tensorboardX",), "pytest": ("pytest", "iniconfig", "pluggy", "packaging", "pygments"),
          "sklearn": ("scikit-learn", "joblib", "threadpoolctl", "narwhals"),
          "matplotlib": ("matplotlib", "contourpy", "cycler", "fonttools", "kiwisolver", "pyparsing",
                         "python-dateutil", "six"), "setuptools": ("setuptools",)}
SPECS = {"setuptools": "setuptools>=70.1"}    # what jaxcnn's build needs (bdist_wheel inside), not this Python's
REQUIRED = ("parity", "loop_transfers", "agreement", "bench")     # the profile is extra
TESTS_LIMIT_S = {False: 240, True: 900}     # the three test stages together; dry run: the suite on the CPU
LATER = {"profile": 90, "torch_compile": 150}   # each starts only with this much of the budget left


def _python_json(env: dict, code: str, cwd: str | None = None) -> dict:
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(f"{sys.executable} -c ... failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def missing_modules(env: dict, modules) -> dict[str, str | None]:
    """``{module: None | why not}`` as the child processes will see them (blocked modules included)."""
    return _python_json(env, f"import sys; sys.path.insert(0, {os.path.join(ROOT, 'benchmarks')!r}); "
                             f"import import_block; import_block.main({list(modules)!r})")


def installed(env: dict, dists) -> dict[str, str | None]:
    code = ("import importlib.metadata as m, json\nout = {}\nfor d in %r:\n    try: out[d] = m.version(d)\n"
            "    except m.PackageNotFoundError: out[d] = None\nprint(json.dumps(out))") % (list(dists),)
    return _python_json(env, code)


def pip(*args: str, log) -> bool:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    log(f"$ {' '.join(cmd)}  -> exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.returncode == 0


def install_missing(env: dict, site: str, wheelhouse: str | None, blocked: set[str], log) -> dict:
    """Installs the wheels of the modules the stages need and lack (and their lacking dependencies) from
    ``wheelhouse`` into ``site``, with ``--no-deps`` so nothing already installed changes."""
    wanted = sorted({m for needs in NEEDS.values() for m in needs})
    absent = [m for m, why in missing_modules(env, wanted).items() if why is not None]
    report = {"absent": absent, "installed": []}
    if not absent or not wheelhouse:
        return report
    dists = [d for m in absent if m in WHEELS for d in WHEELS[m]]
    have = installed(env, dists)
    # a blocked module's own distribution counts as missing; its dependencies only where not installed
    todo = [d for m in absent if m in WHEELS for i, d in enumerate(WHEELS[m]) if (i == 0 and m in blocked)
            or have.get(d) is None]
    todo = list(dict.fromkeys(todo))
    if todo and pip("install", "--no-deps", "--no-index", "--find-links", wheelhouse, "--target", site, *todo,
                    log=log):
        report["installed"] = todo
    return report


def install_jaxcnn(work: str, site: str, wheelhouse: str | None, env: dict, log) -> bool:
    """``pip install --no-deps`` of a copy of the package (the repository stays clean) into ``site``."""
    src = os.path.join(work, "src")
    shutil.copytree(os.path.join(ROOT, "jaxcnn"), os.path.join(src, "jaxcnn"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), src)
    version = re.match(r"(\d+)\.(\d+)", installed(env, ["setuptools"])["setuptools"] or "0.0")
    # this Python's setuptools where it can build a wheel itself (70.1 and later), else one from the wheelhouse
    isolation = ["--no-build-isolation"] if version and tuple(map(int, version.groups())) >= (70, 1) else []
    links = ["--find-links", wheelhouse] if wheelhouse else []
    return pip("install", "--no-deps", "--no-index", *links, *isolation, "--target", site, src, log=log)


def make_wheelhouse(folder: str, python_version: str) -> int:
    """Downloads the wheels of ``WHEELS`` for CPython ``python_version`` on x86-64 Linux (the versions this
    Python has, where it has them) into ``folder``."""
    from importlib import metadata

    def pinned(dist: str) -> str:
        if dist in SPECS:
            return SPECS[dist]
        try:
            return f"{dist}=={metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            return dist

    tag = python_version.replace(".", "")
    dists = [pinned(d) for ds in WHEELS.values() for d in ds]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--dest", folder,
           "--python-version", python_version, "--implementation", "cp", "--abi", f"cp{tag}", "--abi", "abi3",
           "--abi", "none", *(a for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
                                          "any") for a in ("--platform", p)), *dists]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


class Stages:
    """Runs the stages as child processes within the budget; one log per stage in ``out``."""

    def __init__(self, out: str, budget_s: float):
        self.out, self.deadline, self.results = out, time.monotonic() + budget_s, {}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def skip(self, name: str, why: str) -> None:
        print(f"{name}: skipped: {why}", flush=True)
        self.results[name] = {"status": "skipped", "why": why}

    def run(self, jobs: dict[str, tuple[list[str], dict, str]], limit_s: float) -> None:
        """``{name: (command, env, cwd)}`` side by side, each stopped after ``limit_s`` (and at the deadline)."""
        limit_s = min(limit_s, self.left())
        running, t0 = {}, time.monotonic()
        for name, (cmd, env, cwd) in jobs.items():
            log = open(os.path.join(self.out, f"{name}.log"), "w")
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            print(f"{name}: {' '.join(cmd)}", flush=True)
            running[name] = (subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT), log)
        while running:
            time.sleep(0.5)
            over = time.monotonic() - t0 > limit_s
            for name, (proc, log) in list(running.items()):
                if proc.poll() is None and not over:
                    continue
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                log.close()
                del running[name]
                status = "timed out" if over and proc.returncode < 0 else "passed" if proc.returncode == 0 else "failed"
                self.results[name] = {"status": status, "exit": proc.returncode, "seconds": time.monotonic() - t0,
                                      "log": f"{name}.log"}
                print(f"{name}: {status} ({self.results[name]['seconds']:.0f} s); tail of {name}.log:", flush=True)
                with open(os.path.join(self.out, f"{name}.log")) as f:
                    print("    " + "\n    ".join(f.read().strip().splitlines()[-6:]), flush=True)


def child_env(site: str, block_dir: str | None, blocked, dry_run: bool, cache: str) -> dict:
    env = dict(os.environ)
    paths = [p for p in (block_dir, site) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if block_dir:
        env["JAXCNN_BLOCK_MODULES"], env["JAXCNN_BLOCK_ALLOW"] = ",".join(blocked), site
    env["JAXCNN_CACHE"] = cache          # the measured peak and the oneDNN shim: nothing from earlier runs
    env["JAX_PLATFORMS"] = "cpu" if dry_run else "cuda,cpu"
    return env


def plan(args, env: dict, out: str) -> dict[str, list[str]]:
    """The command of each stage."""
    py = sys.executable
    tests = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "not slow", "-rs"]
    torch = ["--torch-python", args.torch_python] if args.torch_python else []
    if args.dry_run:
        bench_models = args.models or ["resnet18", "alexnet"]
        timing = ["--repeats", "1", "--steps", "1"]
        sizes = ["--size", "64", "--batch", "8", *timing]
        agreement = ["--dry-run", "--size", "64", "--batch", "4"]
        one = ["resnet18", "--size", "64", "--batch", "8"]
    else:
        timing = ["--repeats", "3"]
        bench_models, sizes, agreement, one = args.models or list(MODELS), timing, [], ["resnet50"]
    bench = [py, "-m", "jaxcnn.cli", "bench"]
    out_files = lambda name: ["--json", os.path.join(out, f"{name}.json"), "--csv", os.path.join(out, f"{name}.csv")]
    return {"parity": [*tests, os.path.join(ROOT, "tests", "test_parity.py")],
            "loop_transfers": [*tests, os.path.join(ROOT, "tests", "test_loop_transfers.py")],
            "agreement": [py, "-m", "benchmarks.train_agreement", *agreement, "--out",
                          os.path.join(out, "agreement.json")],
            "bench": [*bench, *bench_models, "--mode", "both", "--dtype", "bfloat16", "--vs", "torch", *torch,
                      *([] if args.torch_compile else ["--no-torch-compile"]), *sizes, *out_files("bench")],
            "profile": [*bench, *one, "--mode", "train", "--dtype", "bfloat16", "--repeats", "1", "--steps", "2",
                        "--profile", os.path.join(out, "trace"), *out_files("profile")],
            "torch_compile": [*bench, *one, "--mode", "both", "--dtype", "bfloat16", "--vs", "torch", *torch, *timing,
                              *out_files("torch_compile")]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out", help="logs and results (default $OUT)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for everything (default 480)")
    ap.add_argument("--wheelhouse", help="wheels of what the machine may lack (--make-wheelhouse)")
    ap.add_argument("--dry-run", action="store_true", help="rehearse on the CPU, small sizes")
    ap.add_argument("--block", default=None, help="modules made unimportable, comma-separated "
                                                   f"(default with --dry-run: {','.join(MAY_BE_MISSING)})")
    ap.add_argument("--torch-compile", action="store_true",
                    help="torch.compile in the bench stage too (its first compiles take minutes per model)")
    ap.add_argument("--models", nargs="+", help=f"the bench stage's models (default: {' '.join(MODELS)})")
    ap.add_argument("--torch-python", help="the Python with torch for --vs torch (default: this one)")
    ap.add_argument("--make-wheelhouse", metavar="DIR", help="download the wheels into DIR and stop")
    ap.add_argument("--python-version", default="3.12", help="--make-wheelhouse: the target Python (default 3.12)")
    args = ap.parse_args(argv)
    if args.make_wheelhouse:
        return make_wheelhouse(args.make_wheelhouse, args.python_version)
    t_start = time.monotonic()
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="jaxcnn-gpu-check-")
    site, cache = os.path.join(work, "site"), os.path.join(work, "cache")
    blocked = [m for m in (args.block if args.block is not None else
                           ",".join(MAY_BE_MISSING) if args.dry_run else "").split(",") if m]
    block_dir = None
    if blocked:
        block_dir = os.path.join(work, "block")
        os.makedirs(block_dir)
        shutil.copy(os.path.join(ROOT, "benchmarks", "import_block.py"), os.path.join(block_dir, "sitecustomize.py"))
    env = child_env(site, block_dir, blocked, args.dry_run, cache)
    setup_log = open(os.path.join(out, "setup.log"), "w")
    log = lambda text: (setup_log.write(text + "\n"), setup_log.flush())
    summary = {"command": " ".join(["python", "benchmarks/gpu_check.py", *(argv or sys.argv[1:])]),
               "dry_run": args.dry_run, "blocked": blocked, "python": sys.version.split()[0]}
    stages = Stages(out, args.budget)
    try:
        summary["packages"] = installed(env, ["jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax",
                                              "optax", "orbax-checkpoint", "numpy", "torch", "torchvision"])
        summary["wheels"] = install_missing(env, site, args.wheelhouse, set(blocked), log)
        summary["jaxcnn_installed"] = install_jaxcnn(work, site, args.wheelhouse, env, log)
        if not summary["jaxcnn_installed"]:       # the stages still run, on the repository's copy
            env["PYTHONPATH"] += os.pathsep + ROOT
        probe = ("import json, jax, jaxcnn; print(json.dumps({'jaxcnn': jaxcnn.__file__, 'backend': "
                 "jax.default_backend(), 'devices': [str(d) for d in jax.devices()]}))")
        summary["jax"] = _python_json(env, probe, cwd=work)
        print(f"jaxcnn from {summary['jax']['jaxcnn']}; JAX devices: {summary['jax']['devices']}", flush=True)
        if not args.dry_run and summary["jax"]["backend"] != "gpu":
            raise RuntimeError(f"JAX sees no GPU (backend {summary['jax']['backend']}); --dry-run rehearses on a CPU")
        absent = set(missing_modules(env, sorted({m for n in NEEDS.values() for m in n})).items())
        absent = {m for m, why in absent if why is not None}
        commands = plan(args, env, out)
        tests_env = {**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        parity_env = {**tests_env, **({} if args.dry_run else {"JAX_DEFAULT_MATMUL_PRECISION": "highest"})}
        first = {}
        for name, stage_env, cwd in (("parity", parity_env, ROOT), ("loop_transfers", tests_env, ROOT),
                                     ("agreement", tests_env, ROOT)):
            lacking = sorted(set(NEEDS[name]) & absent)
            if lacking:
                stages.skip(name, f"needs {', '.join(lacking)} (give --wheelhouse)")
            else:
                first[name] = (commands[name], stage_env, cwd)
        if first:
            stages.run(first, TESTS_LIMIT_S[args.dry_run])
        bench_env = {**env, "JAXCNN_COMPILE_CACHE": "0"}     # compile times from cold
        lacking = sorted(set(NEEDS["bench"]) & absent) if not args.torch_python else []
        if lacking:
            print(f"bench: {', '.join(lacking)} missing here: the PyTorch side will say so", flush=True)
        stages.run({"bench": (commands["bench"], bench_env, work)}, stages.left() - 5)
        for name, needed in LATER.items():
            if stages.left() >= needed:
                stages.run({name: (commands[name], bench_env, work)}, stages.left() - 5)
            else:
                stages.skip(name, f"under {needed} s of the budget left")
    except Exception as err:       # the summary is written whatever happened
        summary["error"] = f"{type(err).__name__}: {err}"
        print(f"gpu_check: error: {summary['error']}", flush=True)
    finally:
        setup_log.close()
        summary["stages"], summary["seconds"] = stages.results, time.monotonic() - t_start
        with open(os.path.join(out, "gpu_check.json"), "w") as f:
            json.dump(summary, f, indent=1)
        shutil.rmtree(work, ignore_errors=True)
    ok = "error" not in summary and all(stages.results.get(n, {}).get("status") == "passed" for n in REQUIRED)
    print(f"gpu_check: {'passed' if ok else 'NOT passed'} in {summary['seconds']:.0f} s; {out}/gpu_check.json",
          flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
