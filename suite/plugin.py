"""attnspec's pytest plugin: options, the implementations under test, tiers, known failures,
the suite's self-tests and the verdict table.

pytest loads it through the `attnspec` entry point (group `pytest11`, pyproject.toml); the root
conftest.py loads it in a checkout that is not installed. Its objects:

- `AttnspecSession`, one per run, registered on the plugin manager as "attnspec-session"
  (`session_of(config)` finds it; the benchmark plugin reads `device`, `report_dir`,
  `subjects` and `dtypes` there). Its methods are the hooks that need the run's state.
- `UnderTest` (attnspec.implementations.discovery), one per implementation under test: the value of
  every `impl` argument. It carries the locator `--impl` took and stands in for the
  implementation, so `verify("CLAUSE-ID", impl, dtype)` needs no lookup by name.
- `Case`, in each collected clause test's `item.stash[CASE]`: the clause (from a
  `@pytest.mark.clause("ID")` marker, else the test's name `test_<id>`), the subject and
  the dtype. The verdict table is built from it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from attnspec import suite
from attnspec.implementations import discovery
from attnspec.implementations.discovery import UnderTest
from attnspec.plugin import OPT_CALL_TIMEOUT, OPT_DEVICE, OPT_IMPL, OPT_REPRODUCE, OPT_SELF_TEST
from attnspec.reports import conformance, replay
from attnspec.specs import profiles
from attnspec.specs.catalog import all_clauses
from attnspec.specs.clauses import Clause
from attnspec.specs.runner import RunOptions, run_options, summarised
from attnspec.suite import known_failures
from attnspec.suite.plugin_options import (
    IN_CHECKOUT,
    check_rootdir,
    is_within,
    report_dir,
    resolve_device,
    resolve_dtypes,
    resolve_known,
    resolve_pairs,
    resolve_shapes,
    resolve_subjects,
    resolve_tier,
)

SESSION = "attnspec-session"
# The suite testing itself (mutants, gallery, registry, plugin runs): run by a plain
# `pytest suite`, left out when --impl names the implementations under test or at --tier smoke.
SELF_TESTS = (
    Path(suite.__file__).resolve().parent / "meta",
    Path(suite.__file__).resolve().parent / "bench" / "test_plugin.py",
    Path(suite.__file__).resolve().parent / "bench" / "test_options.py",
)

profiles.register()


@dataclass(frozen=True)
class Case:
    """What one collected clause test checks: a clause, on a subject (None: the cost model), in a dtype."""

    clause: Clause
    subject: UnderTest | None
    dtype: str


CASE = pytest.StashKey[Case]()
SUMMARY = pytest.StashKey[dict[str, Any]]()  # what the clause run reported besides its verdict


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "clause(id): the clause a test checks (default: the one its name test_<id> names)",
    )
    if config.pluginmanager.get_plugin(SESSION) is None:
        config.pluginmanager.register(AttnspecSession(config), SESSION)


def session_of(config: pytest.Config) -> AttnspecSession | None:
    """This run's attnspec session (None when the plugin is not active)."""
    plugin = config.pluginmanager.get_plugin(SESSION)
    return plugin if isinstance(plugin, AttnspecSession) else None


class AttnspecSession:
    """The run's options and implementations under test, and the records of the verdict table."""

    def __init__(self, config: pytest.Config) -> None:
        check_rootdir(config)
        self.config = config
        self.dtypes = resolve_dtypes(config)
        self.tier = resolve_tier(config)
        if not config.getoption("hypothesis_profile", None):
            settings.load_profile(f"attnspec-{self.tier}")
        self.device = resolve_device(config.getoption(OPT_DEVICE))
        self.report_dir = report_dir(config)
        self.run_options = RunOptions(
            call_timeout=config.getoption(OPT_CALL_TIMEOUT) or None,
            reproduce=config.getoption(OPT_REPRODUCE),
            shapes=resolve_shapes(config),
        )
        self.known = resolve_known(config)
        locators = discovery.requested(config.getoption(OPT_IMPL))
        self.subjects = resolve_subjects(locators, self.device)
        self.named = bool(locators)  # --impl or $ATTNSPEC_IMPL named the implementations
        # Clause tests run each implementation in its own dtypes (benchmarks use `dtypes`).
        self.pairs = resolve_pairs(config, self.subjects, self.named, self.tier)
        # The smoke tier is a seconds-long check of implementations: the suite's own tests
        # (most of a default run's time) join it only when asked for. They need a checkout
        # (they run its files): installed from a wheel, they never run.
        self.self_test = IN_CHECKOUT and (
            bool(config.getoption(OPT_SELF_TEST)) or (not locators and self.tier != "smoke")
        )
        self.self_tests_left_out = False
        self.clause_of_test = {c.test_name: c for c in all_clauses()}
        self.records: list[conformance.Record] = []

    # --- collection ---
    def pytest_report_header(self, config: pytest.Config) -> str:
        return (
            f"attnspec: implementations {self.checked_in() or 'none'}; "
            f"device {self.device}; tier {self.tier}"
        )

    def checked_in(self) -> str:
        """`numpy [float32], mykernel [bfloat16, float16]`: the dtypes each implementation runs in."""
        by_name: dict[str, list[str]] = {}
        for subject, dtype in self.pairs:
            by_name.setdefault(subject.name, []).append(dtype)
        return ", ".join(f"{name} [{', '.join(d)}]" for name, d in by_name.items())

    def pytest_ignore_collect(self, collection_path: Path, config: pytest.Config) -> bool | None:
        if self.self_test or not any(is_within(collection_path, p) for p in SELF_TESTS):
            return None
        if any(
            is_within(Path(arg.split("::")[0]).resolve(), collection_path) for arg in config.args
        ):
            return None  # named on the command line: the user asked for it
        self.self_tests_left_out = True
        return True

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        names = metafunc.fixturenames
        if "impl" in names and "dtype" in names and "benchmark" not in names:
            ids = [f"{s.name}-{d}" for s, d in self.pairs]
            metafunc.parametrize(("impl", "dtype"), self.pairs, ids=ids)
            return
        if "impl" in names:
            metafunc.parametrize("impl", self.subjects, ids=[s.name for s in self.subjects])
        if "dtype" in names:
            metafunc.parametrize("dtype", self.dtypes)

    def case_of(self, item: pytest.Item) -> Case | None:
        """The clause, subject and dtype `item` checks; None for tests that check no clause."""
        if any(is_within(Path(str(item.path)), p) for p in SELF_TESTS[:1]):
            return None
        clause: Clause | None
        marker = item.get_closest_marker("clause")
        if marker is not None:
            clause = self.clause_by_id(str(marker.args[0]), item)
        else:
            clause = self.clause_of_test.get(getattr(item, "originalname", item.name))
        if clause is None:
            return None
        params = item.callspec.params if hasattr(item, "callspec") else {}
        subject = params.get("impl")
        return Case(
            clause, subject if isinstance(subject, UnderTest) else None, params.get("dtype", "")
        )

    @staticmethod
    def clause_by_id(clause_id: str, item: pytest.Item) -> Clause:
        for c in all_clauses():
            if c.id == clause_id:
                return c
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.clause({clause_id!r}) names no clause"
        )

    def pytest_collection_modifyitems(
        self, config: pytest.Config, items: list[pytest.Item]
    ) -> None:
        for item in items:
            case = self.case_of(item)
            if case is not None:
                item.stash[CASE] = case
                item.user_properties.append(("clause", case.clause.id))  # a JUnit property
        if self.known:
            known_failures.apply(items, self.known, describe)

    # --- running ---
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, None, None]:
        with run_options(self.run_options), summarised() as summary:
            try:
                return (yield)
            finally:
                item.stash[SUMMARY] = summary

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        case = item.stash.get(CASE, None)
        written = self.write_replay(case, call) if case is not None else None
        report = yield
        if case is not None and (
            report.when == "call" or (report.when == "setup" and not report.passed)
        ):
            details = getattr(call.excinfo.value, "details", {}) if call.excinfo else {}
            info = {
                "clause": case.clause.id,
                "sentence": case.clause.sentence,
                "impl": case.subject.name if case.subject else "spec",
                "locator": case.subject.locator if case.subject else "",
                "dtype": case.dtype,
                "details": details,
                "replay": written.command if written else "",
                "shape": written.shape if written else "",
                **summary_of(item),  # limits: declared, left_out: what they moved
            }
            report.user_properties.append(("attnspec", info))  # travels to the xdist controller
        return report

    def write_replay(self, case: Case, call: pytest.CallInfo[None]) -> replay.Replay | None:
        """Write the replay files of a failing clause test; note the command on its exception
        (before pytest renders it, so the failure message shows it)."""
        exc = call.excinfo.value if call.excinfo and call.when == "call" else None
        trace = getattr(exc, "attnspec_trace", None)
        if exc is None or trace is None or case.subject is None:
            return None
        try:
            written = replay.write(
                trace,
                self.report_dir / "failures",
                clause=case.clause.id,
                impl=case.subject.impl,
                locator=case.subject.locator,
                dtype=case.dtype,
                device=self.device,
            )
        except Exception as error:  # a replay that cannot be written must not hide the failure
            exc.add_note(f"(no replay file: {type(error).__name__}: {error})")
            return None
        exc.add_note(conformance.REPLAY_NOTE + written.command)
        return written

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        info = dict(report.user_properties).get("attnspec")
        if isinstance(info, dict):
            self.records.append(record(report, info, self.device, self.tier))

    # --- reporting ---
    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        """An implementation under test with every clause skipped fails the run."""
        if hasattr(self.config, "workerinput"):
            return
        if conformance.unchecked(self.records) and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):
            return
        tr = terminalreporter
        if self.self_tests_left_out:
            if not IN_CHECKOUT:
                tr.write_line(
                    "attnspec: the suite's self-tests were left out (they need a checkout of "
                    "attnspec; this one is installed)"
                )
            else:
                why = (
                    f"{OPT_IMPL} names the implementations under test"
                    if self.named
                    else "smoke tier"
                )
                tr.write_line(
                    f"attnspec: the suite's self-tests were left out ({why}); "
                    f"add {OPT_SELF_TEST} to run them too"
                )
        if not self.records:
            return
        for impl, why in conformance.unchecked(self.records).items():
            tr.write_line(
                f"attnspec: FAILED: {impl} had no clause run, every one was skipped ({why}); "
                f"a run that checked nothing is not a pass"
            )
        order = [c.id for c in all_clauses()]
        self.records.sort(
            key=lambda r: (order.index(r.clause) if r.clause in order else 999, r.column)
        )
        tr.section("attnspec conformance")
        tr.write_line(conformance.table(self.records, order))
        blocks = (
            conformance.failures(self.records),
            conformance.skips(self.records),
            conformance.left_out(self.records),
        )
        for block in blocks:
            if block:
                tr.write_line("")
                tr.write_line(block)
        path = self.report_dir / "conformance.json"
        meta = {
            "device": self.device,
            "tier": self.tier,
            "dtypes": sorted({d for _, d in self.pairs}),
            "checked_in": {s.name: [d for t, d in self.pairs if t is s] for s in self.subjects},
            "unchecked": conformance.unchecked(self.records),
        }
        conformance.write_json(self.records, path, meta)
        tr.write_line(f"\nconformance report: {path}")
        next_steps = conformance.next_steps(self.records)
        if next_steps:
            tr.write_line("")
            tr.write_line(next_steps)


def summary_of(item: pytest.Item) -> dict[str, Any]:
    """What the item's clause run reported besides its verdict (empty before it ran)."""
    found: dict[str, Any] | None = item.stash.get(SUMMARY, None)
    return found or {}


def describe(item: pytest.Item) -> tuple[str | None, str | None]:
    """The clause ID and implementation name of an item, for known-failure selectors."""
    case = item.stash.get(CASE, None)
    if case is None:
        return None, None
    return case.clause.id, case.subject.name if case.subject else None


def record(
    report: pytest.TestReport, info: dict[str, Any], device: str, tier: str
) -> conformance.Record:
    """The verdict-table record of one clause test's report."""
    longrepr = str(report.longrepr) if report.longrepr else ""
    outcome: str = report.outcome
    if hasattr(report, "wasxfail") and report.skipped:
        outcome, message = "xfailed", str(report.wasxfail)
    elif report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed:
        message = conformance.failure_message(longrepr)
    else:
        message = ""
    reproduce = ""
    if report.failed:
        reproduce = conformance.reproduction(
            report.nodeid, info["locator"], info["dtype"], longrepr, device, tier
        )
    return conformance.Record(
        clause=info["clause"],
        sentence=info["sentence"],
        impl=info["impl"],
        dtype=info["dtype"],
        outcome=outcome,
        nodeid=report.nodeid,
        message=message,
        details=info["details"],
        reproduce=reproduce,
        replay=str(info.get("replay", "")),
        shape=str(info.get("shape", "")),
        limits=str(info.get("limits", "")),
        left_out=list(info.get("left_out", [])),
    )
