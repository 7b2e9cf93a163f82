"""pytest in a foreign folder with plugin autoloading off and attnspec's entry point loaded by
hand; the modules loaded by the end of the session go to FOLDER/modules.txt.

    python -m attnspec.suite.meta.entry_probe FOLDER [pytest options]

suite/meta/test_plugin_entry.py reads it: in a project that does not run attnspec the entry
point must load nothing heavy; asked (an attnspec option) it must load the suite's plugins.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PLUGINS = ["-p", "no:cacheprovider", "-p", "attnspec.plugin", "-p", "pytest_benchmark.plugin"]


def main(argv: list[str]) -> int:
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # before pytest reads it
    import pytest

    folder = Path(argv[0])
    (folder / "test_other.py").write_text("def test_other():\n    assert True\n")
    os.chdir(folder)
    code = pytest.main([*PLUGINS, *argv[1:]])
    (folder / "modules.txt").write_text("\n".join(sorted(sys.modules)))
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
