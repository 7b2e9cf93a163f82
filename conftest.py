"""pytest wiring for a checkout of attnspec: the plugins, when no installed entry point has.

The attnspec plugin (suite/plugin.py: options, implementations under test, verdict table) is
registered by the installed package's `pytest11` entry point; a checkout that is not installed,
or a run with plugin autoloading off, gets it from here instead, never twice.
"""

import sys

PLUGIN = "suite.plugin"

pytest_plugins = [*([] if PLUGIN in sys.modules else [PLUGIN]), "reports.bench_plugin"]
