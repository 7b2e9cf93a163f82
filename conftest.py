"""pytest wiring for attnspec: options, the implementation under test, tiers and the verdict table.

Every test that takes an `impl` argument runs once per selected implementation (and `dtype`
once per selected dtype); a test named `test_<clause>` is that clause's test in the report.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from implementations import discovery
from reports import conformance
from specs import presets, profiles, runner
from specs.clauses import all_clauses
from specs.dtypes import DTYPES
from suite import harness, known_failures

OPT_IMPL = "--impl"
OPT_DEVICE = "--device"
OPT_DTYPE = "--dtype"
OPT_TIER = "--tier"
OPT_REPORT_DIR = "--report-dir"
OPT_CALL_TIMEOUT = "--call-timeout"
OPT_KNOWN = "--known-failures"
OPT_REPRODUCE = "--reproduce"
OPT_SHAPES = "--shapes"
REPORT_DIR_DEFAULT = Path(__file__).parent / "reports" / "out"

STATE = pytest.StashKey[dict[str, Any]]()

pytest_plugins = ["reports.bench_plugin"]

profiles.register()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("attnspec", "attnspec conformance and benchmarks")
    group.addoption(
        OPT_IMPL,
        action="append",
        default=[],
        metavar="SPEC",
        help="implementation to test (repeatable): a shipped name (numpy, torch), "
        "module:attr, path/to/file.py[:attr], or an entry-point name. "
        f"Default: ${discovery.ENV_VAR}, else every shipped and registered one that imports.",
    )
    group.addoption(
        OPT_DEVICE,
        default=None,
        help="torch device for implementations that support one (default: cuda if available, else cpu)",
    )
    group.addoption(
        OPT_DTYPE,
        action="append",
        default=[],
        metavar="DTYPE",
        help=f"working dtype (repeatable): {', '.join(DTYPES)}. Default: float32.",
    )
    group.addoption(
        OPT_TIER,
        default=None,
        help=f"run tier: {', '.join(profiles.TIERS)} (default: ${profiles.TIER_ENV}, else default)",
    )
    group.addoption(
        OPT_CALL_TIMEOUT,
        type=float,
        default=runner.CALL_TIMEOUT_S,
        metavar="SECONDS",
        help="time limit for one call into an implementation; a hang fails that clause "
        f"(default {runner.CALL_TIMEOUT_S:g}; 0 disables)",
    )
    group.addoption(
        OPT_KNOWN,
        default=None,
        metavar="FILE",
        help="file of known failures (one 'SELECTOR  # reason' per line); listed tests are "
        "xfail(strict), entries that match nothing warn",
    )
    group.addoption(
        OPT_REPRODUCE,
        default=None,
        metavar="BLOB",
        help="replay one failing example: the blob from the @reproduce_failure line of a failure "
        "(run it with that failure's test id)",
    )
    group.addoption(
        OPT_SHAPES,
        default=None,
        metavar="MODEL",
        help="draw only one real model's attention shapes (a slice of its KV head groups): "
        + ", ".join(p.name for p in presets.PRESETS),
    )
    group.addoption(
        OPT_REPORT_DIR,
        default=None,
        help=f"folder for generated reports (default: {REPORT_DIR_DEFAULT})",
    )


def resolve_device(requested: str | None) -> str:
    """The torch device to use; a device torch cannot use is a usage error."""
    try:
        import torch
    except ImportError:
        if requested not in (None, "cpu"):
            raise pytest.UsageError(f"--device {requested}: torch is not installed") from None
        return "cpu"
    device = requested or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise pytest.UsageError(f"--device {device}: {exc}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError(f"--device {device}: CUDA is not available (torch sees no GPU)")
    return device


def resolve_tier(config: pytest.Config) -> str:
    tier = config.getoption(OPT_TIER) or os.environ.get(profiles.TIER_ENV) or "default"
    if tier not in profiles.TIERS:
        raise pytest.UsageError(
            f"--tier {tier}: unknown tier; choose from {', '.join(profiles.TIERS)}"
        )
    return tier


def resolve_shapes(config: pytest.Config) -> str | None:
    """The preset --shapes names (its canonical name), or None; an unknown one is a usage error."""
    name = config.getoption(OPT_SHAPES)
    if name is None:
        return None
    try:
        return presets.get(name).name
    except ValueError as exc:
        raise pytest.UsageError(f"{OPT_SHAPES}: {exc}") from None


def resolve_impls(config: pytest.Config, device: str) -> list[tuple[str, Any]]:
    """(spec, implementation) pairs selected by --impl / the environment / the default."""
    specs = discovery.requested(config.getoption(OPT_IMPL))
    try:
        if specs:
            impls = [(s, discovery.load(s, device)) for s in specs]
        else:
            impls = [(i.name, i) for i in discovery.default(device)]
    except discovery.ImplError as exc:
        raise pytest.UsageError(f"--impl: {exc}") from None
    names = [i.name for _, i in impls]
    if len(set(names)) != len(names):
        raise pytest.UsageError(f"--impl: two implementations share a name: {names}")
    return impls


def pytest_configure(config: pytest.Config) -> None:
    dtypes = config.getoption(OPT_DTYPE) or ["float32"]
    for d in dtypes:
        if d not in DTYPES:
            raise pytest.UsageError(f"--dtype {d}: unknown dtype; choose from {', '.join(DTYPES)}")
    tier = resolve_tier(config)
    if not config.getoption("hypothesis_profile", None):
        settings.load_profile(f"attnspec-{tier}")
    device = resolve_device(config.getoption(OPT_DEVICE))
    report_dir = Path(config.getoption(OPT_REPORT_DIR) or REPORT_DIR_DEFAULT)
    runner.CALL_TIMEOUT_S = config.getoption(OPT_CALL_TIMEOUT) or None
    harness.REPRODUCE_BLOB = config.getoption(OPT_REPRODUCE)
    harness.SHAPES = resolve_shapes(config)
    known_path = config.getoption(OPT_KNOWN)
    try:
        known = known_failures.parse(Path(known_path)) if known_path else []
    except known_failures.KnownFailuresError as exc:
        raise pytest.UsageError(f"{OPT_KNOWN}: {exc}") from None
    impls = resolve_impls(config, device)
    harness.SPECS = {i.name: spec for spec, i in impls}
    config.stash[STATE] = {
        "impls": impls,
        "dtypes": dtypes,
        "device": device,
        "tier": tier,
        "report_dir": report_dir,
        "known": known,
        "records": [],
    }


def pytest_report_header(config: pytest.Config) -> str:
    state = config.stash[STATE]
    names = ", ".join(i.name for _, i in state["impls"]) or "none"
    return (
        f"attnspec: implementations {names}; dtypes {', '.join(state['dtypes'])}; "
        f"device {state['device']}; tier {state['tier']}"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    state = metafunc.config.stash[STATE]
    if "impl" in metafunc.fixturenames:
        impls = [i for _, i in state["impls"]]
        metafunc.parametrize("impl", impls, ids=[i.name for i in impls])
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", state["dtypes"])


CLAUSE_OF_TEST = {c.test_name: c for c in all_clauses()}


def clause_and_impl(item: pytest.Item) -> tuple[str | None, str | None]:
    """The clause ID an item tests (None for meta-tests and benchmarks) and its impl's name."""
    clause = CLAUSE_OF_TEST.get(getattr(item, "originalname", ""))
    if clause is None or "/meta/" in item.nodeid:
        return None, None
    callspec = getattr(item, "callspec", None)
    impl = callspec.params.get("impl") if callspec else None
    return clause.id, getattr(impl, "name", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    known = config.stash[STATE]["known"]
    if known:
        known_failures.apply(items, known, clause_and_impl)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    clause_id, impl_name = clause_and_impl(item)
    if clause_id is None:
        return report
    if report.when == "call" or (report.when == "setup" and not report.passed):
        callspec = getattr(item, "callspec", None)
        details = getattr(call.excinfo.value, "details", {}) if call.excinfo else {}
        info = {
            "clause": clause_id,
            "sentence": CLAUSE_OF_TEST[item.originalname].sentence,
            "impl": impl_name or "spec",
            "dtype": callspec.params.get("dtype", "") if callspec else "",
            "details": details,
        }
        report.user_properties.append(("attnspec", info))  # travels to the xdist controller
    return report


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    info = dict(report.user_properties).get("attnspec")
    if info is None:
        return
    config = _config
    state = config.stash[STATE]
    spec = {i.name: s for s, i in state["impls"]}.get(info["impl"], info["impl"])
    longrepr = str(report.longrepr) if report.longrepr else ""
    outcome = report.outcome
    if hasattr(report, "wasxfail") and report.skipped:
        outcome, message = "xfailed", str(report.wasxfail)
    elif report.skipped and isinstance(report.longrepr, tuple):
        message = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed:
        message = conformance.failure_message(longrepr)
    else:
        message = ""
    state["records"].append(
        conformance.Record(
            clause=info["clause"],
            sentence=info["sentence"],
            impl=info["impl"],
            dtype=info["dtype"],
            outcome=outcome,
            nodeid=report.nodeid,
            message=message,
            details=info["details"],
            reproduce=conformance.reproduction(
                report.nodeid, spec, info["dtype"], longrepr, state["device"], state["tier"]
            )
            if report.failed
            else "",
        )
    )


_config: pytest.Config


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    global _config
    _config = session.config


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash[STATE]
    records: list[conformance.Record] = state["records"]
    if not records or hasattr(config, "workerinput"):
        return
    order = [c.id for c in all_clauses()]
    records.sort(key=lambda r: (order.index(r.clause) if r.clause in order else 999, r.column))
    tr = terminalreporter
    tr.section("attnspec conformance")
    tr.write_line(conformance.table(records, order))
    for block in (conformance.failures(records), conformance.skips(records)):
        if block:
            tr.write_line("")
            tr.write_line(block)
    path = state["report_dir"] / "conformance.json"
    meta = {"device": state["device"], "tier": state["tier"], "dtypes": state["dtypes"]}
    conformance.write_json(records, path, meta)
    tr.write_line(f"\nconformance report: {path}")
