"""Mutation testing of trio_asgi_ws's core modules with mutmut 3, and a per-module score table.

Usage (from the repository root, with the project's virtualenv, into which ``pip install
mutmut==3.8.1`` was added)::

    python scripts/mutation.py                       # the five core modules, fast suite
    python scripts/mutation.py --full-suite-rerun    # then re-run the survivors against the whole suite
    python scripts/mutation.py --modules _pump routing --show-survivors
    python scripts/mutation.py --survivors-out '/tmp/survivors-{module}.txt'

It is run by hand, not by CI.  What it does:

1. Copies the working tree (uncommitted edits included; ``.git``, virtualenvs, caches and any
   ``mutants/`` left out) to a temporary directory, so nothing in the repository is touched:
   mutmut 3 writes its ``mutants/`` tree in the directory it runs in.
2. Configures mutmut there by adding a ``[mutmut]`` section to the *copy's* ``setup.cfg``:
   ``source_paths = trio_asgi_ws`` (3.x's name for ``paths_to_mutate``: the whole package is copied
   into ``mutants/``), ``only_mutate`` = the chosen modules, ``also_copy`` = every other top-level
   file and folder (the tests read README.md and import examples/), and, as the test selection,
   the fast suite: ``tests/`` without ``tests/integration/``.
3. Runs ``mutmut run --max-children <CPUs>``.  mutmut first runs the selected tests once with its
   trampolines in "stats" mode to learn which tests call which function; each mutant is then run
   (``pytest -x``) against only the tests that call the function it mutates.  pytest runs with
   ``mutants/`` as its working directory and root, so ``import trio_asgi_ws`` resolves to the
   mutated copy, not to the (editable) installed one; the script checks this (see below).
4. With ``--full-suite-rerun``, re-runs only the survivors, in a second copy (``whole/``: changing
   mutmut's test selection would make it forget every verdict) whose test selection is all of
   ``tests/``, the integration tests included.  mutmut collects its stats over the whole suite,
   then runs each survivor against every test of the whole suite that calls the mutated function
   in-process.  Tests that reach the code only in a subprocess (the ``python -m trio_asgi_ws``
   CLI tests) are not attributed to any function, so they cannot kill a mutant here.  The
   integration tests need what ``.ci/run`` provides: a ``redis-server`` on the PATH (or
   ``REDIS_URL``), chromium and chromedriver.
5. Reads the verdicts from ``mutants/trio_asgi_ws/<module>.py.meta`` (JSON: mutant name -> pytest
   exit code, which mutmut maps to killed/survived/timeout/...) and prints, per module: mutants,
   killed, survived, timeout, no tests or skipped, other (suspicious, segfault, not checked), and
   the score ``killed / (mutants - equivalent)``.  Timeouts are not counted as killed; the last
   column, ``det. %``, counts them as detected: ``(killed + timeout) / (mutants - equivalent)``.
   Mutants judged equivalent (no test can tell them apart from the original) can be listed in a
   file given with ``--equivalent`` (one mutant name or fnmatch pattern per line, ``#`` comments);
   they are left out of the denominator and reported in the ``equiv.`` column.

The sanity checks: mutmut runs a "forced fail" pass first (every trampoline raises), which must
make the tests fail, so the tests do import the mutated copy; after the run, the script checks
that each chosen module, and no other, was mutated and has verdicts.  A module with 0% or 100% of
its mutants killed is reported as suspicious (mutants that are never imported look like that).

Not mutated, by mutmut 3's design: functions with a decorator other than ``@staticmethod`` /
``@classmethod`` (``@property``, ``@asynccontextmanager``, ``@overload``...), decorators, and
default values other than names, numbers and strings.  Lines marked ``# pragma: no mutate`` are
skipped too.

Timeouts: a mutant that deadlocks a real-clock test waits in epoll until mutmut's wall-clock
limit, ``(estimated time of its tests + constant) * multiplier``, mutmut's default 15 x (t + 1 s),
kept here (``--timeout-multiplier``, ``--timeout-constant``): about 100 s for a mutant of
``_pump.py``, 180 s for one of ``websockets.py``; at b14074e the 41 mutants that hang cost about
43 minutes of the run.  A tighter limit is faster but not equivalent: at b14074e some
``_pump.py`` mutants were killed only after 45-70 s (a test's own deadline fired), and
4 x (t + 5 s) turned those kills into timeouts.

The property tests (``tests/test_properties_*.py``: hypothesis, derandomized, no example database)
are part of the fast suite.  Measured at b14074e: under mutmut's trampolines they take 18.6 s of
the fast suite's 22.8 s of test time.  mutmut runs each mutant's tests fastest first, so a killed
mutant seldom reaches them, but every survivor of ``_pump.py``, ``websockets.py`` and
``datastructures.py`` runs them in full: about 1,400 of the 4,400 CPU-seconds of the mutants that
did not hang.  Kept, as they are the suite's strongest tests of the pump and of the WebSocket
state machine; ``--no-property-tests`` leaves them out.

``--keep`` keeps the temporary copy (its path is printed) so that ``mutmut browse``, ``mutmut
results`` or ``mutmut show <name>`` can be run in its ``repo/`` afterwards.  ``--workdir DIR``
works in DIR and keeps it; given a DIR that holds an earlier run, it resumes that run (the tree is
not copied again, so it is for the same code): only mutants without a verdict are run.  Ctrl-C
stops mutmut, which keeps the verdicts it has reached; the script then prints the table of what
was decided (an interrupted whole-suite re-run leaves the survivors not yet re-run as survivors).
``--show-survivors`` prints mutmut's diff for every surviving mutant, grouped by module;
``--survivors-out PATTERN`` writes the same to one file per module (``{module}`` in the pattern is
replaced by the module's name).

Timing, on the 2-core machine, at b14074e (2,010 mutants in the five default modules): the fast
suite alone takes 20-40 s; the fast-suite run takes about 80 minutes (4,400 CPU-seconds of
mutants that were decided, plus 41 hanging mutants at about 125 s each, two at a time).  The whole
suite takes about 50 s alone, 25 s of it the 89 integration tests, which call most of the library
in-process, so ``--full-suite-rerun`` of the 378 survivors there would add about 1.5 hours.
"""

from __future__ import annotations

import argparse
import configparser
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "trio_asgi_ws"
DEFAULT_MODULES = ("_pump", "websockets", "broadcast", "routing", "datastructures")
FAST_SUITE = ("tests/", "--ignore=tests/integration")
PROPERTY_TESTS = "tests/test_properties_*.py"
WHOLE_SUITE = ("tests/",)

# Files and folders of the working tree that are not copied into the scratch directory.
IGNORED = (
    ".git",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "mutants",
    "__pycache__",
    ".hypothesis",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
    "node_modules",
)

# mutmut 3's verdicts, by the exit code it stores (mutmut.stats.status_by_exit_code).
KILLED, SURVIVED, TIMEOUT, NO_TESTS, OTHER = "killed", "survived", "timeout", "no tests", "other"
STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: KILLED,
    3: KILLED,  # pytest internal error
    37: KILLED,  # caught by the type checker (no type_check_command is configured here)
    0: SURVIVED,
    36: TIMEOUT,
    24: TIMEOUT,
    -24: TIMEOUT,
    152: TIMEOUT,
    255: TIMEOUT,
    5: NO_TESTS,
    33: NO_TESTS,
    34: NO_TESTS,  # skipped
}

# Run inside the scratch copy by --show-survivors: mutmut's own diff for each mutant named on stdin.
DIFF_HELPER = """
import sys
from pathlib import Path
from mutmut.mutation.diff_apply import get_diff_for_mutant
path = Path(sys.argv[1])
for name in sys.stdin.read().split():
    print(f"# {name}")
    print(get_diff_for_mutant(name, path=path))
"""

MUTMUT_MAIN = "import sys; from mutmut.__main__ import cli; sys.argv[0] = 'mutmut'; cli()"


def status_of(exit_code: int | None) -> str:
    return STATUS_BY_EXIT_CODE.get(exit_code, OTHER)


@dataclass
class ModuleResult:
    module: str
    verdicts: dict[str, int | None]
    equivalent: set[str] = field(default_factory=set)

    def counts(self) -> Counter[str]:
        return Counter(status_of(code) for name, code in self.verdicts.items() if name not in self.equivalent)

    def survivors(self) -> list[str]:
        return sorted(
            (n for n, c in self.verdicts.items() if status_of(c) == SURVIVED and n not in self.equivalent),
            key=_natural_key,
        )


def _natural_key(name: str) -> tuple[str, int]:
    head, _, number = name.rpartition("__mutmut_")
    return (head, int(number)) if number.isdigit() else (name, 0)


def module_path(module: str) -> str:
    """``_pump`` -> ``trio_asgi_ws/_pump.py``; ``backends.redis`` -> ``trio_asgi_ws/backends/redis.py``."""
    return f"{PACKAGE}/{module.replace('.', '/')}.py"


def copy_tree(source: Path, destination: Path) -> None:
    shutil.copytree(source, destination, ignore=shutil.ignore_patterns(*IGNORED), symlinks=True)


def write_config(
    work: Path, modules: Sequence[str], test_selection: Sequence[str], timeout: tuple[float, float]
) -> None:
    """Put mutmut's configuration in the scratch copy's setup.cfg (``[mutmut]``)."""
    pyproject = work / "pyproject.toml"
    if pyproject.exists() and "[tool.mutmut" in pyproject.read_text(encoding="utf-8"):
        # mutmut reads pyproject's table instead of setup.cfg when there is one: drop it in the copy.
        lines = pyproject.read_text(encoding="utf-8").splitlines(keepends=True)
        kept: list[str] = []
        skipping = False
        for line in lines:
            if line.startswith("["):
                skipping = line.strip().startswith("[tool.mutmut")
            if not skipping:
                kept.append(line)
        pyproject.write_text("".join(kept), encoding="utf-8")
    cfg = configparser.ConfigParser(interpolation=None)
    setup_cfg = work / "setup.cfg"
    cfg.read(setup_cfg, encoding="utf-8")
    if cfg.has_section("mutmut"):
        cfg.remove_section("mutmut")
    cfg.add_section("mutmut")

    def multiline(values: Iterable[str]) -> str:
        return "".join(f"\n{v}" for v in values)

    cfg.set("mutmut", "source_paths", f"{PACKAGE}/")
    # Everything else the tests may read or import (README.md, examples/, docs/...) goes into mutants/
    # too; mutmut copies tests/, setup.cfg and pyproject.toml by itself.
    also_copy = sorted(p.name for p in work.iterdir() if p.name not in (PACKAGE, "mutants", "tests"))
    cfg.set("mutmut", "also_copy", multiline(also_copy))
    cfg.set("mutmut", "only_mutate", multiline(module_path(m) for m in modules))
    cfg.set("mutmut", "pytest_add_cli_args_test_selection", multiline(test_selection))
    # No pytest cache in the copy; report only the first failure's short traceback.
    cfg.set("mutmut", "pytest_add_cli_args", multiline(["-p", "no:cacheprovider"]))
    cfg.set("mutmut", "use_git_change_detection", "false")
    # A mutant that deadlocks a real-clock test sleeps in epoll until mutmut's wall-clock limit,
    # (estimated time of its tests + constant) * multiplier (see the module's docstring).
    cfg.set("mutmut", "timeout_multiplier", str(timeout[0]))
    cfg.set("mutmut", "timeout_constant", str(timeout[1]))
    with setup_cfg.open("w", encoding="utf-8") as f:
        cfg.write(f)


def read_verdicts(work: Path, module: str) -> dict[str, int | None]:
    meta = work / "mutants" / (module_path(module) + ".meta")
    if not meta.exists():
        return {}
    data = json.loads(meta.read_text(encoding="utf-8"))
    verdicts: dict[str, int | None] = data["exit_code_by_key"]
    return verdicts


def check_mutated(work: Path, modules: Sequence[str]) -> None:
    """Fail loudly if a chosen module was copied into mutants/ without mutants or never mutated."""
    for module in modules:
        mutated = work / "mutants" / module_path(module)
        text = mutated.read_text(encoding="utf-8") if mutated.exists() else ""
        if "_mutmut_" not in text or not read_verdicts(work, module):
            raise SystemExit(f"mutation.py: mutmut did not mutate {module_path(module)} (see the log)")
    chosen = {module_path(m) for m in modules}
    for other in (work / "mutants" / PACKAGE).rglob("*.py"):
        relative = other.relative_to(work / "mutants").as_posix()
        if relative not in chosen and "_mutmut_" in other.read_text(encoding="utf-8"):
            raise SystemExit(f"mutation.py: {relative} was mutated although it was not chosen")


class Interrupted(Exception):
    """A mutmut run was stopped with Ctrl-C (SIGINT); the verdicts it reached are kept."""


def run_mutmut(
    python: str, work: Path, args: Sequence[str], log: Path, modules: Sequence[str], names: int | None
) -> None:
    """``mutmut run ARGS`` in ``work``, its output to ``log``, with a progress line every 30 s."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUTANT_UNDER_TEST", "PYTEST_ADDOPTS")}
    # No PYTHONPATH to mutants/ here: it does not exist yet when the interpreter starts, and the import
    # system caches that; mutmut puts it first on sys.path itself.  The tests that start
    # ``python -m trio_asgi_ws`` point PYTHONPATH at their own checkout, which here is mutants/.
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.monotonic()
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n$ mutmut {' '.join(args)}\n")
        out.flush()
        process = subprocess.Popen(
            [python, "-c", MUTMUT_MAIN, *args],
            cwd=work,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            while True:
                try:
                    code = process.wait(timeout=30)
                    break
                except subprocess.TimeoutExpired:
                    done = total = 0
                    for module in modules:
                        verdicts = read_verdicts(work, module)
                        total += len(verdicts)
                        done += sum(1 for c in verdicts.values() if c is not None)
                    if names is not None:
                        total = names
                    elapsed = time.monotonic() - started
                    print(f"  ... {elapsed / 60:5.1f} min, {done}/{total} mutants decided", file=sys.stderr)
        except KeyboardInterrupt:
            # Ctrl-C reaches mutmut too: it stops its workers and keeps the verdicts it has.  A SIGINT
            # sent to this process alone is passed on.
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGINT)
                process.wait()
            raise Interrupted from None
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
        raise SystemExit(f"mutation.py: mutmut exited with {code}; full log: {log}")


def load_equivalent(paths: Sequence[Path]) -> list[str]:
    patterns: list[str] = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                patterns.append(line)
    return patterns


def percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}" if whole else "-"


def print_table(results: Sequence[ModuleResult]) -> None:
    header: tuple[str, ...] = ("module", "mutants", "killed", "survived", "timeout", "no tests", "other")
    header += ("equiv.", "score %", "det. %")
    rows: list[tuple[str, ...]] = []
    total: Counter[str] = Counter()
    total_mutants = total_equivalent = 0
    for r in results:
        c = r.counts()
        mutants, equivalent = len(r.verdicts), len(r.equivalent)
        total += c
        total_mutants += mutants
        total_equivalent += equivalent
        rows.append(_row(f"{r.module}.py", mutants, equivalent, c))
    if len(results) > 1:
        rows.append(_row("all", total_mutants, total_equivalent, total))
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs]
        print("| " + " | ".join(cells) + " |")


def _row(name: str, mutants: int, equivalent: int, c: Counter[str]) -> tuple[str, ...]:
    scored = mutants - equivalent
    return (
        name,
        str(mutants),
        str(c[KILLED]),
        str(c[SURVIVED]),
        str(c[TIMEOUT]),
        str(c[NO_TESTS]),
        str(c[OTHER]),
        str(equivalent),
        percent(c[KILLED], scored),
        percent(c[KILLED] + c[TIMEOUT], scored),
    )


def survivor_diffs(python: str, work: Path, result: ModuleResult) -> str:
    names = result.survivors()
    if not names:
        return f"## {result.module}.py: no surviving mutants\n"
    proc = subprocess.run(
        [python, "-c", DIFF_HELPER, module_path(result.module)],
        cwd=work,
        input="\n".join(names),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"mutation.py: could not read the survivors' diffs:\n{proc.stderr}")
    return f"## {result.module}.py: {len(names)} surviving mutants\n\n{proc.stdout}"


def rerun_survivors(
    python: str,
    scratch: Path,
    modules: Sequence[str],
    verdicts: dict[str, dict[str, int | None]],
    children: int,
    timeout: tuple[float, float],
) -> str | None:
    """Re-run the fast suite's survivors against the whole suite, in a copy of their own, and update
    ``verdicts`` with the result.  Returns what was interrupted, if Ctrl-C stopped it.

    A copy of its own because changing mutmut's test selection makes it forget every verdict; and a
    resumed run re-runs only the survivors that have no whole-suite verdict yet.
    """
    work, whole = scratch / "repo", scratch / "whole"
    survivors = [n for m in modules for n, c in verdicts[m].items() if status_of(c) == SURVIVED]
    if not whole.exists():
        copy_tree(work, whole)
    write_config(whole, modules, WHOLE_SUITE, timeout)
    known: dict[str, int | None] = {}
    for m in modules:
        known.update(read_verdicts(whole, m))
    todo = [n for n in survivors if known.get(n) is None]
    print(
        f"re-running {len(todo)} of {len(survivors)} survivors against: pytest {' '.join(WHOLE_SUITE)}",
        file=sys.stderr,
    )
    interrupted = None
    if todo:
        args = ["run", "--max-children", str(children), *todo]
        try:
            run_mutmut(python, whole, args, scratch / "mutmut-whole.log", modules, len(todo))
        except Interrupted:
            interrupted = "the whole-suite re-run (survivors not yet re-run keep their fast-suite verdict)"
    for m in modules:
        rerun = read_verdicts(whole, m)
        for name, code in verdicts[m].items():
            if status_of(code) == SURVIVED and rerun.get(name) is not None:
                verdicts[m][name] = rerun[name]
    return interrupted


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--modules",
        nargs="+",
        default=list(DEFAULT_MODULES),
        metavar="MODULE",
        help=f"modules of {PACKAGE}/ to mutate, without .py (default: %(default)s)",
    )
    parser.add_argument(
        "--full-suite-rerun",
        action="store_true",
        help="re-run the fast suite's survivors against the whole suite (integration tests included)",
    )
    parser.add_argument(
        "--show-survivors", action="store_true", help="print the diff of every surviving mutant"
    )
    parser.add_argument(
        "--survivors-out",
        metavar="PATTERN",
        help="write each module's survivors' diffs to PATTERN, '{module}' replaced by the module's name",
    )
    parser.add_argument(
        "--equivalent",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="file of mutant names (or fnmatch patterns) judged equivalent, left out of the score",
    )
    parser.add_argument(
        "--no-property-tests",
        action="store_true",
        help=f"leave the hypothesis property tests ({PROPERTY_TESTS}) out of the fast suite",
    )
    parser.add_argument(
        "--max-children",
        type=int,
        default=os.cpu_count() or 1,
        help="mutants tested in parallel (default: the number of CPUs, %(default)s)",
    )
    parser.add_argument(
        "--timeout-multiplier",
        type=float,
        default=15.0,
        help="a mutant times out after (its tests' estimated time + constant) x this (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout-constant",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="see --timeout-multiplier (default: %(default)s)",
    )
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter with the project's test dependencies and mutmut 3 (default: this one)",
    )
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout to test (default: %(default)s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy and print its path")
    parser.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="work in DIR instead of a temporary directory, and keep it; if DIR holds a previous run "
        "(of the same code: the tree is not copied again), resume it, running only mutants without a verdict",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    repo: Path = args.repo.resolve()
    modules: list[str] = [m.removesuffix(".py") for m in args.modules]
    for module in modules:
        if not (repo / module_path(module)).is_file():
            raise SystemExit(f"mutation.py: no module {module_path(module)} in {repo}")
    version = subprocess.run(
        [args.python, "-c", "import importlib.metadata as m; print(m.version('mutmut'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if version.returncode != 0 or not version.stdout.startswith("3."):
        raise SystemExit(f"mutation.py: {args.python} has no mutmut 3 (pip install mutmut==3.8.1)")
    equivalent_patterns = load_equivalent(args.equivalent)
    timeout: tuple[float, float] = (args.timeout_multiplier, args.timeout_constant)

    if args.workdir is not None:
        scratch = args.workdir.resolve()
        scratch.mkdir(parents=True, exist_ok=True)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="trio-asgi-ws-mutation-"))
    keep = args.keep or args.workdir is not None
    work = scratch / "repo"
    log = scratch / "mutmut.log"
    started = time.monotonic()
    interrupted: str | None = None
    try:
        if work.exists():
            print(f"reusing {work}: mutants that have a verdict are not run again", file=sys.stderr)
        else:
            copy_tree(repo, work)
        fast_suite: list[str] = list(FAST_SUITE)
        if args.no_property_tests:
            fast_suite += [f"--ignore={p.relative_to(work)}" for p in sorted(work.glob(PROPERTY_TESTS))]
        write_config(work, modules, fast_suite, timeout)
        print(
            f"mutmut {version.stdout.strip()} on {', '.join(module_path(m) for m in modules)} "
            f"in {work} (log: {log}), {args.max_children} children",
            file=sys.stderr,
        )
        print(f"fast suite: pytest {' '.join(fast_suite)}", file=sys.stderr)
        try:
            run_mutmut(
                args.python, work, ["run", "--max-children", str(args.max_children)], log, modules, None
            )
        except Interrupted:
            interrupted = "the fast-suite run (mutants not yet run are counted under 'other')"
        check_mutated(work, modules)
        verdicts = {m: read_verdicts(work, m) for m in modules}
        fast_minutes = (time.monotonic() - started) / 60
        print(f"fast suite done in {fast_minutes:.1f} min", file=sys.stderr)

        if args.full_suite_rerun and interrupted is None:
            print("\nFast suite alone:\n")
            print_table([ModuleResult(m, dict(verdicts[m])) for m in modules])
            print(flush=True)
            interrupted = rerun_survivors(args.python, scratch, modules, verdicts, args.max_children, timeout)
            rerun_minutes = (time.monotonic() - started) / 60 - fast_minutes
            print(f"whole-suite re-run done in {rerun_minutes:.1f} min", file=sys.stderr)

        results = [
            ModuleResult(
                m,
                verdicts[m],
                {n for n in verdicts[m] if any(fnmatch.fnmatch(n, p) for p in equivalent_patterns)},
            )
            for m in modules
        ]
        suite = "fast suite"
        if args.full_suite_rerun:
            suite += ", survivors re-run against the whole suite"
        print(f"\nMutation scores ({suite}; {(time.monotonic() - started) / 60:.1f} min):\n")
        if interrupted is not None:
            print(f"INTERRUPTED: Ctrl-C during {interrupted}\n")
        print_table(results)
        for r in results:
            c = r.counts()
            if len(r.verdicts) >= 10 and c[KILLED] in (0, len(r.verdicts) - len(r.equivalent)):
                warning = f"SUSPICIOUS: {r.module}.py has {c[KILLED]} of {len(r.verdicts)} mutants killed"
                print(f"\n{warning}", file=sys.stderr)

        if args.show_survivors or args.survivors_out:
            for r in results:
                text = survivor_diffs(args.python, work, r)
                if args.show_survivors:
                    print("\n" + text)
                if args.survivors_out:
                    out = Path(args.survivors_out.replace("{module}", r.module))
                    out.write_text(text, encoding="utf-8")
                    print(f"survivors of {r.module}.py: {out}", file=sys.stderr)
    finally:
        if keep:
            print(f"kept {scratch} (cd {work} && mutmut results / mutmut show NAME)", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
