"""Where each millisecond of a path's wall goes: start-up, imports by group, the rest.

For each path the breakdown needs, from the same run of the benchmark:

- the modules the path loads beyond start-up: the pipe is run once through
  `MODULES_WRAPPER` (`python -c`, the entry script executed in it, an atexit hook that
  writes sorted(sys.modules) to a file), less what start-up loads: the modules of the same
  wrapper with no script (the hook's own `atexit` included) and what its `-X importtime`
  run imports or tries;
- the wall of importing exactly those modules and nothing else (`import_only_argv`),
  timed like the floors;
- the self time of each module from `python -X importtime` runs of the pipe; a failed
  import (`_winapi`, `org.python.core`...) is charged to the module that tried it.

`-X importtime` inflates what it measures, so the self times are used only to share
out the import-only wall (less the `-c pass` wall) among the modules: `attribute`
scales them so that their sum is exactly that.  The groups are the standard library
(`sys.stdlib_module_names` of the pipe's interpreter), each third-party distribution
of IMPORT_GROUPS, the gateway's own package, and any other top-level name on its own.
"""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path

# Group label -> the top-level module names it holds (a distribution and what it alone
# brings); the standard library is told by sys.stdlib_module_names.
IMPORT_GROUPS = {
    "filelock": {"filelock"},
    "dotenv": {"dotenv"},
    "requests": {"requests", "urllib3", "idna", "charset_normalizer", "certifi"},
    "mailparser": {"mailparser"},
    "torokiki_pipe": {"torokiki_pipe"},
}
GROUP_ORDER = ["stdlib", *IMPORT_GROUPS]

# What each field of a path in the JSON's "breakdown" is.
DEFINITION = {
    "wall_s": "the path's median wall in the per-mail runs",
    "startup_s": "median wall of `python -c pass`",
    "imports_total_s": "median wall of `python -c 'import sys; sys.path[0] = <the entry script's folder>; "
                       "import gc; gc.disable(); import <modules_loaded>; gc.freeze()'` (import_only) - startup_s",
    "imports_s": "imports_total_s shared out among the groups by their median -X importtime self times",
    "imports_raw_us": "median -X importtime self times summed by group, in µs, unscaled",
    "importtime_over_import_only": "sum of imports_raw_us / imports_total_s",
    "top_modules": "the ten largest median -X importtime self times (self_raw_us), scaled like imports_s (self_s)",
    "website_s": "median time the reference website spent answering the path's requests",
    "sendmail_s": "median wall of the sendmail row alone, for paths that reply",
    "gateway_work_s": "wall_s - startup_s - imports_total_s - website_s - sendmail_s",
    "modules_loaded": "what the path had in sys.modules at exit and `python -c pass` has not",
}

# python -c MODULES_WRAPPER OUT [SCRIPT ARG...]: runs SCRIPT as __main__ with ARG... (or
# nothing) from the sys.path `python SCRIPT` would have, then at exit writes its sys.modules
# to OUT, a blank line, and the interpreter's standard library names.  It imports only
# atexit (built in) before the script runs, and uses os, which start-up has loaded.
MODULES_WRAPPER = r"""
import atexit, os, sys
def _dump(out=sys.argv.pop(1), modules=sys.modules):
    names = sorted(modules)
    with open(out, "w", encoding="utf-8") as stream:
        stream.write("\n".join(names) + "\n\n" + "\n".join(sorted(sys.stdlib_module_names)) + "\n")
atexit.register(_dump)
if len(sys.argv) > 1:
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.realpath(sys.argv[0]))   # as for `python SCRIPT`
    with open(sys.argv[0], "rb") as _script:
        _code = compile(_script.read(), sys.argv[0], "exec")
    exec(_code, {"__name__": "__main__", "__file__": sys.argv[0], "__builtins__": __builtins__})
"""

_IMPORTTIME = re.compile(r"^import time:\s*(\d+)\s*\|\s*(\d+)\s*\|\s*(\S+)\s*$")


def read_modules(path: Path) -> tuple[list[str], set[str]]:
    """(the modules, the standard library's names) that MODULES_WRAPPER wrote to `path`."""
    modules, _, stdlib = path.read_text(encoding="utf-8").partition("\n\n")
    return modules.split(), set(stdlib.split())


def import_only_argv(python: str, modules: list[str], script: Path) -> list[str]:
    """A command that imports these modules and nothing else, the way the pipe's entry
    `script` does: from the same sys.path (its folder first, where `-c` would put the
    current folder), with the cyclic garbage collector off from the start and what the
    imports built frozen out of the collection at exit (as the entry point does before it
    imports the gateway, and after)."""
    folder = os.path.dirname(os.path.realpath(script))
    return [python, "-c", f"import sys; sys.path[0] = {folder!r}; import gc; gc.disable(); "
                          f"import {', '.join(modules)}; gc.freeze()"]


def self_times(stderr: str) -> dict[str, tuple[int, str | None]]:
    """Module -> (self time in µs, the module that imported it or None), from the
    `-X importtime` lines of a child's stderr (failed imports included)."""
    lines = []
    for line in stderr.splitlines():
        match = _IMPORTTIME.match(line)
        if match:
            name_field = line.rsplit("|", 1)[1]
            depth = len(name_field) - len(name_field.lstrip(" "))
            lines.append((depth, match.group(3), int(match.group(1))))
    # Each import is printed after the imports it made, one level deeper: read backwards,
    # the importer of a line is the nearest line above it in the stack with a smaller depth.
    found: dict[str, tuple[int, str | None]] = {}
    stack: list[tuple[int, str]] = []
    for depth, name, micros in reversed(lines):
        while stack and stack[-1][0] >= depth:
            stack.pop()
        found[name] = (micros, stack[-1][1] if stack else None)
        stack.append((depth, name))
    return found


def group_of(module: str, stdlib: set[str]) -> str:
    top = module.split(".", 1)[0]
    if top in stdlib:
        return "stdlib"
    for group, tops in IMPORT_GROUPS.items():
        if top in tops:
            return group
    return f"other: {top}"


def _owner(module: str, times: dict, loaded: set[str], startup: set[str]) -> str | None:
    """The module an import's time is charged to: itself when it loaded, else (a failed
    attempt, such as `_winapi` off Windows) the nearest importer that did; None for start-up."""
    seen = set()
    while module is not None and module not in seen:
        if module in startup:
            return None
        if module in loaded:
            return module
        seen.add(module)
        module = times.get(module, (0, None))[1]
    return None


def attribute(runs: list[dict], loaded: set[str], startup: set[str], stdlib: set[str], import_s: float) -> dict:
    """Share `import_s` seconds of imports out among groups and modules by their -X importtime
    self times (`runs`: one `self_times` dict per run); `loaded`: the modules the path loaded
    beyond start-up; `startup`: what start-up loads or tries, left out.

    Returns {"imports_s": {group: s}, "imports_raw_us": {group: median µs}, "top_modules":
    the ten largest, "importtime_over_import_only": raw sum / import_s}.
    """
    per_module: dict[str, list[int]] = {}
    per_group: dict[str, list[int]] = {}
    for times in runs:
        sums: dict[str, int] = {}
        mine: dict[str, int] = {}
        for module, (micros, _) in times.items():
            owner = _owner(module, times, loaded, startup)
            if owner is not None:
                mine[owner] = mine.get(owner, 0) + micros
        for module, micros in mine.items():
            per_module.setdefault(module, []).append(micros)
            group = group_of(module, stdlib)
            sums[group] = sums.get(group, 0) + micros
        for group, micros in sums.items():
            per_group.setdefault(group, []).append(micros)
    raw = {group: statistics.median(values + [0] * (len(runs) - len(values)))
           for group, values in per_group.items()}
    order = GROUP_ORDER + sorted(set(raw) - set(GROUP_ORDER))
    raw = {group: raw[group] for group in order if group in raw}
    total_us = sum(raw.values())
    scale = import_s / (total_us / 1e6) if total_us else 0.0
    modules = sorted(((statistics.median(values), module) for module, values in per_module.items()), reverse=True)
    return {
        "imports_s": {group: micros / 1e6 * scale for group, micros in raw.items()},
        "imports_raw_us": raw,
        "importtime_over_import_only": (total_us / 1e6) / import_s if import_s > 0 else None,
        "top_modules": [{"module": module, "group": group_of(module, stdlib), "self_raw_us": micros,
                         "self_s": micros / 1e6 * scale} for micros, module in modules[:10]],
    }
