"""What each file that names the real ports must say, checked against implementations/real_ports.py.

pyproject.toml, tox.ini, the shell scripts, the adapters, the manifests and npm files and the docs cannot
read the table, so each has a function here that takes the file's text (and the table) and returns the
places where it disagrees, one line each, naming the file and the port.  tests/test_real_port_sources.py
runs them on the checkout's files, and on altered copies to show that each one can fail.
"""

from __future__ import annotations

import configparser
import json
import re
from collections.abc import Iterable, Mapping

from implementations.real_ports import RealPort

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli pip vendors is the same parser
    from pip._vendor import tomli as tomllib

Ports = Iterable[RealPort]
ENTRY_POINT_GROUP = "lstm_conformance.implementations"


def _python(ports: Ports) -> list[RealPort]:
    return [port for port in ports if not port.is_process]


def _process(ports: Ports) -> list[RealPort]:
    return [port for port in ports if port.is_process]


# ----------------------------------------------------------------------------- pyproject.toml
def check_pyproject(text: str, ports: Ports, bundled: Iterable[str] = ()) -> list[str]:
    """Each extra pins exactly the table's packages, ``all`` holds them, each Python port is the entry point
    the table names (and no entry point is a name neither the table nor ``bundled`` knows), and mypy
    ignores the missing types of the packages each adapter imports."""
    ports = list(ports)
    data = tomllib.loads(text)
    extras: dict[str, list[str]] = data["project"].get("optional-dependencies", {})
    entry_points: dict[str, str] = data["project"].get("entry-points", {}).get(ENTRY_POINT_GROUP, {})
    problems = []
    for port in ports:
        if port.extra is None:
            continue
        got = extras.get(port.extra)
        if got != list(port.pip):
            problems.append(f"pyproject.toml: {port.name}: extra [{port.extra}] is {got}, the table says {list(port.pip)}")
    everything = extras.get("all", [])
    others = {pin for name, pins in extras.items() if name != "all" for pin in pins}
    for port in ports:
        problems += [f"pyproject.toml: {port.name}: extra [all] lacks {pin}" for pin in port.pip if pin not in everything]
    for pin in everything:
        if pin not in others:
            package = re.split(r"[=<>\[ ]", pin)[0]
            owner = next((port.name for port in ports if package in port.pip_versions), "no real port")
            problems.append(f"pyproject.toml: {owner}: extra [all] holds {pin}, which no other extra lists")
    for port in ports:
        got_ep = entry_points.get(port.name)
        if port.is_process and got_ep is not None:
            problems.append(f"pyproject.toml: {port.name}: a process port has an entry point ({got_ep}); "
                            "conformance/process_ports.py registers it")
        elif not port.is_process and got_ep != port.target:
            problems.append(f"pyproject.toml: {port.name}: entry point is {got_ep}, the table says {port.target}")
    known = {port.name for port in ports} | set(bundled)
    problems += [f"pyproject.toml: {name}: entry point {value} names no port of the table"
                 for name, value in entry_points.items() if name not in known]
    ignored = {module for override in data.get("tool", {}).get("mypy", {}).get("overrides", [])
               if override.get("ignore_missing_imports") for module in override.get("module", [])}
    for port in ports:
        problems += [f"pyproject.toml: {port.name}: the mypy override ignoring missing imports lacks {module}.*"
                     for module in port.modules if f"{module}.*" not in ignored]
    return problems


# ----------------------------------------------------------------------------- tox.ini
PORT_COMMANDS = "{[port]commands}"
JS_COMMANDS_PRE = "{[js]commands_pre}"


def check_tox(text: str, ports: Ports) -> list[str]:
    """Each port has its environment, in ``envlist``, with the port's extra and the port command (and
    ``npm ci`` first for a process port); every environment running the port command is a port."""
    ports = list(ports)
    config = configparser.ConfigParser(interpolation=None)
    config.read_string(text)
    envlist = [env.strip() for env in config.get("tox", "envlist", fallback="").split(",")]
    problems = []
    for port in ports:
        section = f"testenv:{port.tox_env}"
        if port.tox_env not in envlist:
            problems.append(f"tox.ini: {port.name}: {port.tox_env} is not in envlist")
        if not config.has_section(section):
            problems.append(f"tox.ini: {port.name}: no [{section}]")
            continue
        extras = {extra.strip() for extra in config.get(section, "extras", fallback="").split(",") if extra.strip()}
        want = {"test"} | ({port.extra} if port.extra else set())
        if extras != want:
            problems.append(f"tox.ini: {port.name}: [{section}] extras are {sorted(extras)}, the table says {sorted(want)}")
        if config.get(section, "commands", fallback="").strip() != PORT_COMMANDS:
            problems.append(f"tox.ini: {port.name}: [{section}] does not run {PORT_COMMANDS}")
        if port.is_process and config.get(section, "commands_pre", fallback="").strip() != JS_COMMANDS_PRE:
            problems.append(f"tox.ini: {port.name}: [{section}] does not install its npm packages ({JS_COMMANDS_PRE})")
    names = {port.tox_env for port in ports}
    for section in config.sections():
        env = section.removeprefix("testenv:")
        if section.startswith("testenv:") and env not in names and \
                config.get(section, "commands", fallback="").strip() == PORT_COMMANDS:
            problems.append(f"tox.ini: {env}: [{section}] runs {PORT_COMMANDS} but is no port of the table")
    return problems


# ----------------------------------------------------------------------------- scripts
def _header(text: str) -> str:
    """The comment block a shell script opens with."""
    lines = text.splitlines()[1:]
    return "\n".join(line for line in lines[:next((i for i, line in enumerate(lines) if not line.startswith("#")),
                                                   len(lines))])


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w-]+", text))


def check_setup_sh(text: str, ports: Ports) -> list[str]:
    """scripts/setup.sh tells the process ports (``npm ci``) from extras, and its header names every extra
    and every process port."""
    ports = list(ports)
    problems = []
    arm = re.search(r"case \$extra in ([\w|-]+)\)", text)
    js = set(arm.group(1).split("|")) if arm else set()
    for port in _process(ports):
        if port.name not in js:
            problems.append(f"scripts/setup.sh: {port.name}: not among the JavaScript ports it runs npm ci for")
    problems += [f"scripts/setup.sh: {name}: runs npm ci for it, but the table has no such process port"
                 for name in sorted(js - {port.name for port in _process(ports)})]
    header = _words(_header(text))
    for port in ports:
        named = port.extra or (port.name if port.is_process else None)
        if named and named not in header:
            problems.append(f"scripts/setup.sh: {port.name}: its header does not name {named}")
    return problems


def _case_arms(text: str, variable: str) -> dict[str, str]:
    """pattern -> body of each arm of ``case $variable in ... esac`` (``a|b)`` gives both names)."""
    block = re.search(rf"case \${variable} in\n(.*?)\n\s*esac", text, re.S)
    arms: dict[str, str] = {}
    for match in re.finditer(r"^\s*([\w|*-]+)\)(.*?);;", block.group(1) if block else "", re.M | re.S):
        for pattern in match.group(1).split("|"):
            arms[pattern] = match.group(2)
    return arms


def check_test_ports_sh(text: str, ports: Ports) -> list[str]:
    """scripts/test-ports.sh asks setup.sh for each port's extra (its name, for a process port: npm ci),
    nothing for a port without one, and names every port when it meets an unknown one."""
    ports = list(ports)
    arms = _case_arms(text, "port")
    problems = []
    for port in ports:
        body = arms.get(port.name)
        if body is None:
            problems.append(f"scripts/test-ports.sh: {port.name}: no case for it")
            continue
        asked = re.findall(r"extras\+=\(([^)]*)\)", body)
        want = ['"$port"'] if port.is_process else [port.extra] if port.extra else []
        if asked != want:
            problems.append(f"scripts/test-ports.sh: {port.name}: asks setup.sh for {asked}, the table says {want}")
        if port.name not in _words(arms.get("*", "")):
            problems.append(f"scripts/test-ports.sh: {port.name}: not named in its unknown-port message")
    names = {port.name for port in ports}
    problems += [f"scripts/test-ports.sh: {name}: a case for it, but the table has no such port"
                 for name in sorted(set(arms) - names - {"*"})]
    return problems


def check_port_table_sh(text: str, ports: Ports) -> list[str]:
    """scripts/port-table.sh reports, by default, the bundled NumPy port and every Python real port."""
    match = re.search(r"\|\| ports=\(([^)]*)\)", text)
    got = match.group(1).split() if match else []
    want = ["numpy"] + [port.name for port in _python(ports)]
    if got != want:
        return [f"scripts/port-table.sh: {name}: its default ports are {got}, the table says {want}"
                for name in sorted(set(got) ^ set(want)) or ["(order)"]]
    return []


def check_ci_run(text: str, ports: Ports) -> list[str]:
    """.ci/run tests only ports of the table, and installs their extras (and npm packages) up front."""
    by_name = {port.name: port for port in ports}
    match = re.search(r"^bash scripts/test-ports\.sh (.*?)(\|\||$)", text, re.M)
    tested = match.group(1).split() if match else []
    extras = re.search(r'LSTM_EXTRAS="([^"]*)"', text)
    installed = set(extras.group(1).split()) if extras else set()
    problems = []
    for name in tested:
        port = by_name.get(name)
        if port is None:
            problems.append(f".ci/run: {name}: tested, but the table has no such port")
            continue
        needed = port.extra or (port.name if port.is_process else None)
        if needed and needed not in installed:
            problems.append(f".ci/run: {name}: LSTM_EXTRAS lacks {needed}")
    return problems


# ----------------------------------------------------------------------------- the ports' own files
def check_adapter(source: str, port: RealPort) -> list[str]:
    """A Python adapter declares the table's expected-failures file, raises the table's one-line error
    when its package is missing, and its docstring names every pinned version."""
    where = port.target.partition(":")[0].replace(".", "/") + ".py"
    problems = []
    if f'lstm_conformance_expected_failures = "{port.expected_failures}"' not in source:
        problems.append(f"{where}: {port.name}: does not declare lstm_conformance_expected_failures = \"{port.expected_failures}\"")
    if port.extra and f'missing_port("{port.name}", ' not in source:
        problems.append(f"{where}: {port.name}: does not raise missing_port(\"{port.name}\", ...) without its package")
    docstring = source.split('"""')[1] if source.count('"""') >= 2 else ""
    problems += [f"{where}: {port.name}: its docstring does not name {pin}" for pin in port.pip
                 if f"``{pin}``" not in docstring]
    return problems


def check_manifest(text: str, port: RealPort) -> list[str]:
    """A process port's manifest has its name, its expected-failures file, and asks for setup.sh by name."""
    where = f"implementations/{port.target}"
    manifest = json.loads(text)
    want_expected = "../../" + port.expected_failures
    install = f"bash scripts/setup.sh {port.name}"
    problems = []
    if manifest.get("name") != port.name:
        problems.append(f"{where}: {port.name}: its name is {manifest.get('name')!r}")
    if manifest.get("expected_failures") != want_expected:
        problems.append(f"{where}: {port.name}: expected_failures is {manifest.get('expected_failures')!r}, "
                        f"the table says {want_expected!r}")
    requires = manifest.get("requires", [])
    if not requires or any(need.get("install") != install for need in requires):
        problems.append(f"{where}: {port.name}: what it requires is not installed by {install!r}")
    return problems


def check_npm(package_json: str, package_lock: str, port_js: str, port: RealPort) -> list[str]:
    """package.json and its lockfile depend on exactly the table's npm packages, and port.js's header names
    each with its version."""
    folder = "implementations/" + port.target.rpartition("/")[0]
    want = port.npm_versions
    problems = []
    got = json.loads(package_json).get("dependencies", {})
    if got != want:
        problems.append(f"{folder}/package.json: {port.name}: dependencies are {got}, the table says {want}")
    locked = json.loads(package_lock).get("packages", {}).get("", {}).get("dependencies", {})
    if locked != want:
        problems.append(f"{folder}/package-lock.json: {port.name}: dependencies are {locked}, the table says {want} "
                        "(npm install in the folder)")
    header = port_js.split("*/")[0]
    problems += [f"{folder}/port.js: {port.name}: its header does not name {package} {version}"
                 for package, version in want.items() if f"{package} {version}" not in header]
    return problems


def check_registered(registered: Mapping[str, object], implementations: object, ports: Ports) -> list[str]:
    """conformance/process_ports.py's REGISTERED maps each process port, and only those, to its manifest."""
    want = {port.name: str(implementations) + "/" + port.target for port in _process(ports)}
    got = {name: str(path) for name, path in registered.items()}
    return [f"conformance/process_ports.py: {name}: REGISTERED has {got.get(name)}, the table says {want.get(name)}"
            for name in sorted(set(want) | set(got)) if got.get(name) != want.get(name)]


# ----------------------------------------------------------------------------- documentation
NUMBERS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def check_install_table(doc: str, table: str, where: str = "docs/real-ports.md") -> list[str]:
    """The document holds the table exactly as scripts/real_ports_install_table.py prints it."""
    if table in doc:
        return []
    lines = set(doc.splitlines())
    problems = []
    for row in table.splitlines():
        if row not in lines:
            name = re.match(r"\| `([^`]+)`", row)
            problems.append(f"{where}: {name.group(1) if name else '(header)'}: its row of the install table is not "
                            "what python scripts/real_ports_install_table.py prints")
    return problems or [f"{where}: (order): the install table's rows are not in the table's order"]


def check_ports_named(doc: str, ports: Ports, where: str, section: str = "") -> list[str]:
    """The document (from the ``section`` heading to the next) names every port in backticks, and says how
    many there are ("Seven real third-party ...")."""
    ports = list(ports)
    if section:
        doc = doc.split(section, 1)[1].split("\n## ", 1)[0] if section in doc else ""
    problems = [f"{where}: {port.name}: not named (as `{port.name}`)" for port in ports if f"`{port.name}`" not in doc]
    count = re.search(r"(\w+) real third-party", doc)
    if not count or count.group(1).lower() != NUMBERS[len(ports)]:
        problems.append(f"{where}: (count): says {count.group(1) if count else 'nothing'} real third-party ports, "
                        f"the table has {NUMBERS[len(ports)]}")
    return problems


def check_error_example(doc: str, message: str, where: str = "docs/real-ports.md") -> list[str]:
    """The document's example of a missing package's error is the message the adapter raises."""
    return [] if message in doc else [f"{where}: (example): its missing-package error is not {message!r}"]
