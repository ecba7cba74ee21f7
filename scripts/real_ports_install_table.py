"""Print the table of docs/real-ports.md's "Installing and running them": one row per real port.

The rows come from implementations/real_ports.py, the one home of the ports' facts;
tests/test_real_port_sources.py checks that the document holds exactly what this prints.  After a
change to the table, run it from the checkout and paste its output over the document's table:

    python scripts/real_ports_install_table.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from implementations.real_ports import REAL_PORTS, RealPort  # the checkout, put first on the path above


def markdown_table(ports: tuple[RealPort, ...] = REAL_PORTS) -> str:
    """The Markdown table, one row per port: its name, what it is, how to install it, how to run it."""
    lines = ["| name | port | install | run |", "|---|---|---|---|"]
    lines += [f"| `{port.name}` | {port.summary} | {port.install} | `pytest --lstm-impl={port.name}` |"
              for port in ports]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
