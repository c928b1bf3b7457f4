"""Mutation testing of the core modules with mutmut 3, each module against its own tests only.

    make mutants                                   # every core module, resumable
    python bench/mutants.py ops/sampling.py ...    # some modules (paths under pointclora/, or a prefix: ops/)
    python bench/mutants.py --report               # only print the report of what has run so far
    python bench/mutants.py --fresh ops/knn.py     # forget a module's results and mutate it again
    python bench/mutants.py engine/trainer.py --functions '*_train_epoch'   # some functions of a module only
    python bench/mutants.py --sample 0.05 --workers 2   # a seeded 5 % of every module's mutants: a quick estimate

Not part of CI: hours from scratch (``--sample 0.05 --workers 2``: about 25 minutes for the whole core). Each module
gets its own mutmut project under ``.mutants/<module>/``
(links to the tree + a pyproject.toml whose ``[tool.mutmut]`` names that one file and its test files), so
mutmut's per-mutant results stay apart and a killed run continues where it stopped (mutmut records every verdict as
it comes; a finished module is skipped until its source or its tests change, then only its survivors and the
functions whose source changed run again; every survivor is run a second time, alone, once). One worker (``--workers``
for more), one thread, ``nice``: the machine is shared. The report (score per module, each surviving mutant as a
one-line diff) is printed and written to ``.mutants/report.md``; docs/TESTING.md holds the committed copy with each
survivor explained.

Read the scores with what is mutated: mutmut 3 does not mutate decorated functions (``@torch.no_grad()``,
``@property``, ``@dataclass`` methods are skipped; ``@staticmethod``/``@classmethod`` are mutated) nor module-level
code; only lines the module's own tests execute are mutated (``mutate_only_covered_lines``: a never-run branch is a
coverage gap, not a mutant to pay a full test run for); the ``*_naive`` test references are not mutated
(SKIP_FUNCTIONS); a few very slow tests are left out of the mutant runs (DESELECT). A timeout counts as killed.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutants"

# Module (under pointclora/) -> the test files that are ITS tests. A mutant counts as killed only by these, so a
# module's score says how well its own tests pin it down, not whether some end-to-end run happens to break.
MODULES: dict[str, list[str]] = {
    "ops/sampling.py": ["tests/ops/test_sampling.py"],
    "ops/knn.py": ["tests/ops/test_knn.py"],
    "ops/grouping.py": ["tests/ops/test_grouping.py"],
    "ops/interpolate.py": ["tests/ops/test_interpolate.py"],
    "ops/chamfer.py": ["tests/ops/test_chamfer.py"],
    "peft/base.py": ["tests/peft/test_adapter_layer.py", "tests/peft/test_lora.py", "tests/peft/test_clora.py",
                     "tests/peft/test_fused_forward.py"],
    "peft/clora.py": ["tests/peft/test_clora.py", "tests/peft/test_clora_q_fixed.py",
                      "tests/peft/test_fused_forward.py", "tests/peft/test_peft_config.py"],  # CLoRAConfig moved in
    "peft/lora.py": ["tests/peft/test_lora.py"],
    "peft/registry.py": ["tests/peft/test_registry.py", "tests/peft/test_inject.py", "tests/peft/test_peft_config.py"],
    "peft/inject.py": ["tests/peft/test_inject.py"],
    "peft/io.py": ["tests/peft/test_adapter_io.py"],
    "engine/trainer.py": ["tests/engine/test_trainer.py", "tests/engine/test_trainer_loss.py",
                          "tests/engine/test_trainer_selection.py", "tests/engine/test_trainer_epoch.py"],
    "engine/evaluation.py": ["tests/engine/test_evaluation.py", "tests/engine/test_voting.py"],
    "engine/optim.py": ["tests/engine/test_optim.py", "tests/engine/test_official_schedule.py"],
    "engine/weights.py": ["tests/engine/test_weights.py", "tests/api/test_saved_formats.py"],
    "engine/checkpoint.py": ["tests/engine/test_checkpoint.py"],
    "datasets/base.py": ["tests/datasets/test_base.py", "tests/datasets/test_formats.py"],
    "datasets/transforms.py": ["tests/datasets/test_transforms.py", "tests/datasets/test_fps_skip.py",
                               "tests/datasets/test_transforms_synthetic_builder.py"],
    "datasets/io.py": ["tests/datasets/test_io.py", "tests/datasets/test_io_errors.py",
                       "tests/datasets/test_bad_input.py", "tests/datasets/test_open_point_format.py"],
    "datasets/modelnet.py": ["tests/datasets/test_modelnet.py", "tests/datasets/test_formats.py",
                             "tests/datasets/test_bad_input.py", "tests/datasets/test_checks.py",
                             "tests/datasets/test_realdata.py"],
    "datasets/scanobjectnn.py": ["tests/datasets/test_scanobjectnn.py", "tests/datasets/test_formats.py",
                                 "tests/datasets/test_bad_input.py"],
    "datasets/shapenetpart.py": ["tests/datasets/test_shapenetpart.py", "tests/datasets/test_formats.py",
                                 "tests/datasets/test_bad_input.py", "tests/datasets/test_realdata.py"],
    "datasets/shapenet55.py": ["tests/datasets/test_shapenet55.py", "tests/datasets/test_formats.py",
                               "tests/datasets/test_bad_input.py"],
}

# Tests left out of a module's mutant runs (pytest -k): each costs far more than it adds for that module.
DESELECT: dict[str, str] = {
    "engine/trainer.py": "not compile",  # torch.compile of a model: 30 s a run; the compile path is utils/compile.py
    "peft/registry.py": "not every_tool",  # the CLIs and a Trainer run with the toy method: 15 s a run under load
    # the builder's test reads datasets/*.yaml at the repository root, which mutmut's mutants/ copy does not hold
    "datasets/transforms.py": "not builder_yaml",
}

# Functions not mutated: the ``*_naive`` references exist for the tests to compare against ("for tests only");
# mutating them would test the tests. mutmut 3 has no per-function switch, so they are dropped from its run list.
SKIP_FUNCTIONS = ["*_naive__mutmut_*"]

# mutmut's CLI with its run list filtered by SKIP_FUNCTIONS (passed in MUTANTS_SKIP).
MUTMUT_MAIN = """
import fnmatch, os
import mutmut.__main__ as mm
skip = [p for p in os.environ.get("MUTANTS_SKIP", "").split(",") if p]
collect = mm.collect_source_file_mutation_data
def filtered(*, mutant_names):
    mutants, by_path = collect(mutant_names=mutant_names)
    return [m for m in mutants if not any(fnmatch.fnmatch(m[1], p) for p in skip)], by_path
mm.collect_source_file_mutation_data = filtered
mm.cli()
"""

# What the tests read besides the package and tests/ (configs for the tasks, the README checks, ...).
LINKED = ["pointclora", "configs", "tools", "datasets", "models", "setup.py", "README.md", "docs"]
# Per-mutant pytest run: stop at the first failure, no cache writes (forked workers would race on it), quiet.
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--tb=no", "-W", "ignore"]
# mutmut's exit-code statuses that count as killed; "no tests" and "survived" are the survivors, the rest errors.
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
SURVIVED = {"survived", "no tests"}


# mutants/conftest.py of each project: mutmut's fork server imports it while collecting, so numba's FPS kernels are
# compiled (or read from numba's cache) once there instead of in every forked per-mutant child (~2 s each).
WARMUP_CONFTEST = '''"""Written by bench/mutants.py: compile the numba FPS kernels once, in mutmut's fork server."""

try:
    import numpy as np

    from pointclora.ops._fps_numba import fps_blocks
except ImportError:  # no numba: nothing to compile
    fps_blocks = None
if fps_blocks is not None:
    for _dtype in (np.float32, np.float64):
        _planar = np.random.default_rng(0).random((3, 64)).astype(_dtype)
        fps_blocks(_planar, 4, 0)
        fps_blocks(_planar, 4, 0, np.zeros(64, dtype=bool))
'''


def module_key(module: str) -> str:
    return module.replace("/", ".").removesuffix(".py")


def _fingerprint(module: str) -> str:
    """Hash of the module and its tests: a finished module is run again only when one of them changed."""
    h = hashlib.sha256()
    for rel in [f"pointclora/{module}", *MODULES[module], "tests/conftest.py"]:
        p = ROOT / rel
        h.update(rel.encode() + (p.read_bytes() if p.exists() else b"<missing>"))
    h.update(_mutmut_config(module).encode())  # a new timeout setting re-runs the timeouts (mutmut resets only those)
    return h.hexdigest()[:16]


def _mutmut_config(module: str) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(x) for x in items) + "]"

    selection = MODULES[module] + (["-k", DESELECT[module]] if module in DESELECT else [])
    return (
        "\n[tool.mutmut]\n"
        'source_paths = ["pointclora"]\n'
        f"only_mutate = {toml_list(['pointclora/' + module])}\n"
        f"pytest_add_cli_args = {toml_list(PYTEST_ARGS)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(selection)}\n"
        # torch is not fork-safe once its thread pools run: fork workers from a server that only imported the tests.
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
        # Only lines the module's own tests execute are mutated: a branch they never reach (pytorch3d's, absent on
        # CPU CI) would give survivors that each cost a full run of the tests and say only "not covered".
        "mutate_only_covered_lines = true\n"
        "use_setproctitle = false\n"
        'also_copy = ["conftest.py"]\n'
        # A mutant that loops (a range bound flipped) is stopped after 6x (its tests' clean CPU time + 15 s) of CPU,
        # or after half of that in wall time: mutmut's wall limit is what fires on a loaded machine, and with 2 s
        # (the first setting) it cut off forked children that were only slow (nice 15, load 7 on 2 cores: ~7 s for
        # 0.1 s of tests) and counted them as killed; 15 s leaves a slow child time to finish with its own verdict.
        "timeout_multiplier = 3.0\n"
        "timeout_constant = 15.0\n"
    )


def prepare(module: str, fresh: bool, work: Optional[Path] = None) -> tuple[Path, bool]:
    """The module's mutmut project: links to the tree, a copy of tests/, its own pyproject.toml.

    Returns it and whether the module or its tests changed since the last run (then the survivors are tried again
    against the new tests; mutmut itself re-mutates the functions whose source changed).
    """
    wd = (work or WORK) / module_key(module)
    if fresh and wd.exists():
        shutil.rmtree(wd)
    wd.mkdir(parents=True, exist_ok=True)
    changed = (wd / "fingerprint").exists() and (wd / "fingerprint").read_text() != _fingerprint(module)
    for name in LINKED:
        link = wd / name
        if (ROOT / name).exists() and not link.is_symlink():
            link.symlink_to(ROOT / name)
    if changed or not (wd / "tests").exists():
        # mutmut copies tests/ (not a link: it copies into mutants/ on every run) from this copy
        shutil.rmtree(wd / "tests", ignore_errors=True)
        shutil.copytree(ROOT / "tests", wd / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (wd / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text() + _mutmut_config(module))
    (wd / "conftest.py").write_text(WARMUP_CONFTEST)
    (wd / "fingerprint").write_text(_fingerprint(module))
    return wd, changed


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # mutmut puts its mutated copy first; the tree itself must not be importable
    env["OMP_NUM_THREADS"] = "1"
    env["MKL_NUM_THREADS"] = "1"
    env["NUMBA_NUM_THREADS"] = "1"
    env["MUTANTS_SKIP"] = ",".join(SKIP_FUNCTIONS)
    env.setdefault("POINTCLORA_REAL_DATA", str(ROOT.parent / "shared" / "data"))
    if not Path(env["POINTCLORA_REAL_DATA"]).is_dir() and Path("/work/shared/data").is_dir():
        env["POINTCLORA_REAL_DATA"] = "/work/shared/data"
    return env


def _mutmut(wd: Path, *args: str, log=None) -> subprocess.CompletedProcess:
    # Niceness 15 in all (`make mutants` already runs at 15: nice on top of it would go to 19 and starve under load).
    cmd = [sys.executable, "-c", MUTMUT_MAIN, *args]
    if os.nice(0) < 15:
        cmd = ["nice", "-n", str(15 - os.nice(0)), *cmd]
    if log is None:
        return subprocess.run(cmd, cwd=wd, env=_env(), capture_output=True, text=True)
    return subprocess.run(cmd, cwd=wd, env=_env(), stdout=log, stderr=subprocess.STDOUT, text=True)


def run_module(module: str, fresh: bool, functions: Optional[str] = None, workers: int = 1) -> dict:
    """Mutate ``module`` (every function, or those whose name matches the glob ``functions``) and test each mutant."""
    wd, changed = prepare(module, fresh)
    summary_path = wd / "summary.json"
    before = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    # With ``functions`` (comma-separated globs), only the matching mutants are run (mutmut runs named mutants
    # again even when they have a verdict).
    names = [f"pointclora.{module_key(module)}.*{g}__mutmut_*" for g in functions.split(",")] if functions else []
    if before.get("complete") and not changed and before.get("functions") == functions:
        print(f"[mutants] {module}: done before ({before['killed']}/{before['total']}), skipped", flush=True)
        return before
    print(f"[mutants] {module}: running against {' '.join(MODULES[module])}", flush=True)
    # A resumed run of an unchanged module keeps the survivors it already retried: only the new ones are run again.
    judged_before = set() if changed or not before else _judged(wd)
    t0 = time.time()
    with open(wd / "run.log", "a") as log:
        proc = _mutmut(wd, "run", "--max-children", str(workers), *names, log=log)
        # Every survivor is run once more on its own. mutmut keeps a verdict until the function's source changes, so
        # after a test change the survivors must face the new tests; and under load a verdict in the main run can be
        # wrong (seen: a mutant that fails the first test on its own reported as survived next to a timeout).
        survivors = collect(module, wd, names)["survivors"] if proc.returncode == 0 else []
        retry = [m["name"] for m in survivors if m["name"] not in judged_before]
        if retry:
            proc = _mutmut(wd, "run", "--max-children", str(workers), *retry, log=log)
    summary = collect(module, wd, names)
    summary["functions"] = functions
    elapsed = round(time.time() - t0, 1)
    if changed:  # the report's time stays that of the full run; the retry's is kept beside it
        summary["seconds"], summary["retry_seconds"] = before.get("seconds", elapsed), elapsed
    else:  # a resumed (killed) run adds up
        summary["seconds"] = round(elapsed + before.get("seconds", 0.0), 1)
    summary["complete"] = proc.returncode == 0 and summary["pending"] == 0
    if not functions and not before.get("functions") and summary["total"] < 0.9 * before.get("total", 0):
        # Seen once: a module re-mutated after a source change came back with 62 mutants instead of 269 (whole
        # functions its tests call had none): mutmut's coverage run for mutate_only_covered_lines saw too little.
        summary["warning"] = (f"{before['total']} mutants before, {summary['total']} now: mutmut's coverage run may "
                              f"have seen too little; run again with --fresh")
        print(f"[mutants] {module}: WARNING: {summary['warning']}", flush=True)
    summary_path.write_text(json.dumps(summary, indent=1))
    print(f"[mutants] {module}: {summary['killed']}/{summary['total']} killed in {summary['seconds']} s"
          f"{'' if summary['complete'] else ' (INCOMPLETE: see ' + str(wd / 'run.log') + ')'}", flush=True)
    return summary


def wilson_interval(killed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a kill rate measured on ``n`` sampled mutants (in %)."""
    if n == 0:
        return 0.0, 100.0
    p = killed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return 100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half)


def run_sample(module: str, fraction: float, seed: int = 0, workers: int = 1) -> dict:
    """Test a seeded random ``fraction`` of ``module``'s mutants: the habit's quick check (the whole core in well
    under an hour), with the score's 95 % interval. The sample is drawn from the sorted mutant names, so the same
    source, fraction and seed give the same sample. Its own mutmut projects (``.mutants/sample/``), so a sample never
    stands in for the full run's verdicts or marks its tests as seen."""
    import math
    import random

    wd, changed = prepare(module, fresh=False, work=WORK / "sample")
    t0 = time.time()
    with open(wd / "run.log", "a") as log:
        # Generate the mutants (and mutmut's per-test stats) without testing any: a name that matches none makes
        # mutmut stop right after generating, with an error we expect.
        _mutmut(wd, "run", "--max-children", str(workers), "pointclora.__no_mutant_has_this_name__", log=log)
        status = {n: st for n, st in _statuses(wd).items()
                  if not any(fnmatch.fnmatch(n, p) for p in SKIP_FUNCTIONS)}  # fmt: skip
        if not status:
            raise RuntimeError(f"mutmut generated no mutants for {module}: see {wd / 'run.log'}")
        names = sorted(status)
        sample = sorted(random.Random(seed).sample(names, max(1, math.ceil(fraction * len(names)))))
        # Named mutants are always re-run: name only the unjudged ones, and the survivors once the tests changed.
        todo = [n for n in sample if not (status[n] in KILLED or status[n] in SURVIVED)
                or (changed and status[n] in SURVIVED)]  # fmt: skip
        proc = _mutmut(wd, "run", "--max-children", str(workers), *todo, log=log) if todo else None
        survivors = collect(module, wd, sample)["survivors"] if proc is None or proc.returncode == 0 else []
        retry = [m["name"] for m in survivors if m["name"] in todo]  # a new survivor is run once more, alone
        if retry:
            proc = _mutmut(wd, "run", "--max-children", str(workers), *retry, log=log)
    summary = collect(module, wd, sample)
    low, high = wilson_interval(summary["killed"], summary["killed"] + summary["survived"])
    before = wd / "summary.sample.json"
    before = json.loads(before.read_text()) if before.exists() else {}
    same = (before.get("fraction"), before.get("seed")) == (fraction, seed)
    # the time that tested this sample: a resumed run adds up, a run with nothing left to test keeps the last figure
    elapsed = round(time.time() - t0, 1)
    seconds = elapsed if not same else round(before["seconds"] + (elapsed if todo else 0.0), 1)
    summary.update(fraction=fraction, seed=seed, population=len(names), seconds=seconds,
                   interval=[round(low, 1), round(high, 1)], complete=summary["pending"] == 0)  # fmt: skip
    (wd / "summary.sample.json").write_text(json.dumps(summary, indent=1))
    print(f"[mutants] {module}: sample of {len(sample)}/{len(names)}: {summary['killed']} killed, "
          f"{summary['survived']} survived (95 % interval {low:.1f}-{high:.1f} %) in {summary['seconds']} s"
          f"{'' if summary['complete'] else ' (INCOMPLETE: see ' + str(wd / 'run.log') + ')'}", flush=True)  # fmt: skip
    return summary


def _statuses(wd: Path) -> dict:
    out = _mutmut(wd, "results", "--all", "true").stdout
    return dict(re.findall(r"^\s+(\S+): (.+)$", out, flags=re.M))


def _judged(wd: Path) -> set:
    """The mutants that already have a verdict (killed or survived)."""
    return {n for n, st in _statuses(wd).items() if st in KILLED or st in SURVIVED}


def collect(module: str, wd: Path, names: Optional[List[str]] = None) -> dict:
    """Each mutant's verdict (``mutmut results --all true``; only those matching ``names`` when given) and the diff of
    every survivor (``mutmut show``)."""
    status = _statuses(wd)
    if names:
        status = {n: st for n, st in status.items() if any(fnmatch.fnmatch(n, p) for p in names)}
    skipped = [n for n in status if any(fnmatch.fnmatch(n, p) for p in SKIP_FUNCTIONS)]
    for name in skipped:
        del status[name]
    survivors = []
    for name, st in sorted(status.items()):
        if st in SURVIVED:
            diff = _mutmut(wd, "show", name).stdout
            minus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
            plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
            survivors.append({"name": name, "status": st, "minus": minus, "plus": plus})
    killed = sum(st in KILLED for st in status.values())
    pending = sum(st in {"not checked", "check was interrupted by user"} for st in status.values())
    return {"module": module, "tests": MODULES[module], "total": len(status), "killed": killed,
            "survived": len(survivors), "pending": pending,
            "other": len(status) - killed - len(survivors) - pending, "skipped": len(skipped), "survivors": survivors}


def report() -> str:
    lines = ["| module | mutants | killed | survived | score | minutes |", "|---|---:|---:|---:|---:|---:|"]
    details = []
    for module in MODULES:
        p = WORK / module_key(module) / "summary.json"
        if not p.exists():
            lines.append(f"| {module} | not run | | | | |")
            continue
        s = json.loads(p.read_text())
        score = 100.0 * s["killed"] / max(1, s["killed"] + s["survived"])
        flag = "" if s.get("complete") else " (incomplete)"
        flag += f" (functions {s['functions']} only)" if s.get("functions") else ""
        flag += f" (WARNING: {s['warning']})" if s.get("warning") else ""
        lines.append(f"| {module}{flag} | {s['total']} | {s['killed']} | {s['survived']} | {score:.1f} % "
                     f"| {s['seconds'] / 60:.1f} |")
        for m in s["survivors"]:
            change = "; ".join(m["minus"]) + "  ->  " + "; ".join(m["plus"])
            details.append(f"- `{m['name']}` ({m['status']}): `{change[:220]}`")
    sampled = ["", "Sampled runs (`--sample`): the kill rate of a seeded sample, with its 95 % interval:", "",
               "| module | sampled / all | killed | survived | score (95 % interval) | minutes |",
               "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for module in MODULES:
        p = WORK / "sample" / module_key(module) / "summary.sample.json"
        if p.exists():
            s = json.loads(p.read_text())
            n = s["killed"] + s["survived"]
            score = 100.0 * s["killed"] / max(1, n)
            flag = "" if s.get("complete") else " (incomplete)"
            sampled.append(f"| {module}{flag} | {s['total']} / {s['population']} ({s['fraction']:g}, seed {s['seed']}) "
                           f"| {s['killed']} | {s['survived']} | {score:.1f} % ({s['interval'][0]}-{s['interval'][1]}) "
                           f"| {s['seconds'] / 60:.1f} |")  # fmt: skip
    extra = sampled if len(sampled) > 5 else []
    return "\n".join(lines + extra + ["", "Surviving mutants:", ""] + details) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help="modules under pointclora/ (or prefixes like ops/); default: all")
    ap.add_argument("--fresh", action="store_true", help="drop the named modules' earlier results first")
    ap.add_argument("--report", action="store_true", help="only print the report of what has run")
    ap.add_argument("--functions", help="only the functions whose (mangled) name matches one of these "
                    "comma-separated globs, e.g. '*_train_epoch,*_optimizer_step' (methods are xǁClassǁmethod)")
    ap.add_argument("--workers", type=int, default=1, help="mutants tested at once (default 1: the machine is "
                    "shared; 2 on an otherwise idle 2-core machine halves a long module such as engine/trainer.py)")
    ap.add_argument("--sample", type=float, help="test only this fraction of each module's mutants (0 < f < 1; "
                    "seeded, so repeatable): a quick estimate with its 95 %% interval, reported apart")
    ap.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    args = ap.parse_args(argv)
    if args.sample is not None and not 0 < args.sample < 1:
        print(f"error: --sample must be a fraction between 0 and 1 (exclusive), got {args.sample}", file=sys.stderr)
        return 2
    if args.sample is not None and args.functions:
        print("error: --sample and --functions cannot be combined", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 2
    try:
        import mutmut  # noqa: F401
    except ImportError:
        print("error: mutmut is not installed (pip install -e '.[dev]' or pip install 'mutmut>=3.8,<4')",
              file=sys.stderr)
        return 2
    chosen = [m for m in MODULES if not args.modules or any(m.startswith(a) for a in args.modules)]
    if not chosen:
        print(f"error: no core module matches {args.modules}; known: {', '.join(MODULES)}", file=sys.stderr)
        return 2
    if not args.report:
        for module in chosen:
            if args.sample is not None:
                run_sample(module, args.sample, args.seed, args.workers)
            else:
                run_module(module, args.fresh, args.functions, args.workers)
    text = report()
    WORK.mkdir(exist_ok=True)
    (WORK / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
