"""pytest wiring for a checkout of attnspec: the entry point, when no installed one has loaded.

attnspec's pytest plugin starts at its cheap entry point (attnspec/plugin.py: the options; the
suite's plugins when the session asks for attnspec, as `pytest suite` here does). The installed
package's `pytest11` entry point registers it; a checkout that is not installed, or a run with
plugin autoloading off, gets it from here instead, never twice.
"""

import sys

ENTRY = "attnspec.plugin"

pytest_plugins = [] if ENTRY in sys.modules else [ENTRY]
