"""The benchmark's results: their statistics, the tables printed, and the JSON written.

Everything here reads the report dict that bench/run.py builds (the JSON's content),
never the benchmark's own state, so a saved JSON can be printed again:

    python -c "import json, sys; sys.path.insert(0, 'bench'); import report; \
report.print_report(json.load(open('bench/results/last.json')))"
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

KB, MB = 1024, 1024 * 1024


def summary(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0}
    if len(values) >= 2:
        p25, _, p75 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        p25 = p75 = values[0]
    return {"n": len(values), "median": statistics.median(values), "min": values[0], "max": values[-1],
            "p25": p25, "p75": p75, "stdev": statistics.stdev(values) if len(values) > 1 else 0.0,
            "samples": values}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def write_json(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


def _ms(stats: dict) -> str:
    half_iqr = (stats["p75"] - stats["p25"]) / 2
    return f"{stats['median'] * 1000:8.1f} ±{half_iqr * 1000:<6.1f}"


def _size(n: int) -> str:
    if n >= MB:
        return f"{n / MB:.1f} MB"
    if n >= KB:
        return f"{n / KB:.0f} KB"
    return f"{n} B"


def print_report(report: dict) -> None:
    m = report["machine"]
    print()
    print(f"torokiki-pipe benchmark  {report['date']}  commit {report['git']['commit'] or '?'}"
          f"{' (dirty)' if report['git']['dirty'] else ''}  {'QUICK' if report['quick'] else 'full'} run")
    print(f"machine: {m['nproc']} cores, {m['cpu_model']}, {m['memory_mb']} MB, Python {m['python']}")
    print(f"pipe: {report['pipe']}  ({report['pipe_version'] or 'version unknown'})")
    print()
    stand_in = report["sendmail"]["kind"] != "msmtp"
    print(f"sendmail: {report['sendmail']['kind']}: {report['sendmail']['command']}")
    if stand_in:
        print("WARNING: msmtp is not installed: the sendmail is the Python outbox stand-in; the wall "
              "targets are judged without it (-sendmail)")
    print()
    # With the stand-in a second ratio column: the wall without the stand-in, which is judged.
    ratio_head = f"{'wall/floor':>10} {'-sendmail':>9}" if stand_in else f"{'wall/floor':>10}"
    ratio_width = 27 if stand_in else 21
    # The case column fits the longest label (the msmtp sink row's is 44 characters).
    w = max([36] + [len(name) + 1 for name in (*report["floors"], *report["mails"])])
    header = (f"{'case':<{w}}{'size':>9}{'n':>4}  {'wall ms (±½IQR)':<17}{'web ms':>8}{'CPU ms':>8}"
              f"{'RSS MB':>8}  {ratio_head:<{ratio_width - 2}}{'ΔRSS/size':>9}")
    print(header)
    print("-" * len(header))
    for name, entry in report["floors"].items():
        ratio = entry["wall_over_import_mailparser_floor"]
        print(f"{name:<{w}}{'':>9}{entry['wall_s']['n']:>4}  {_ms(entry['wall_s']):<17}{'':>8}"
              f"{entry['cpu_s']['median'] * 1000:8.1f}{entry['maxrss_kb']['median'] / KB:8.1f}  "
              f"{ratio:5.2f}x")
    targets = {(t["metric"], t["case"]): t for t in report["targets"]}
    for name, entry in report["mails"].items():
        if entry.get("group", "standard") != "standard":
            continue
        wall_t, rss_t = targets.get(("wall", name)), targets.get(("rss", name))
        ratio = f"{entry['wall_over_import_mailparser_floor']:5.2f}x"
        if stand_in:
            ratio += f" {entry['wall_without_sendmail_over_import_mailparser_floor']:5.2f}x"
        ratio += f" {verdict(wall_t['pass'])}≤{wall_t['limit']:g}" if wall_t else ""
        per = entry["rss_above_floor_per_message_byte"]
        rss = f"{per:6.2f}x" if entry["message_bytes"] >= 50 * KB else f"{'-':>7}"
        rss += f" {verdict(rss_t['pass'])}≤{rss_t['limit']:g}" if rss_t else ""
        print(f"{name:<{w}}{_size(entry['message_bytes']):>9}{entry['wall_s']['n']:>4}  "
              f"{_ms(entry['wall_s']):<17}{entry['website_s']['median'] * 1000:8.1f}"
              f"{entry['cpu_s']['median'] * 1000:8.1f}{entry['maxrss_kb']['median'] / KB:8.1f}  "
              f"{ratio:<{ratio_width}}{rss}")
    get = report["mails"].get("get-5MB")
    if get:
        print(f"{'':<{w}}get-5MB: ΔRSS {get['rss_above_requests_mailparser_floor_bytes'] / MB:.1f} MB = "
              f"{get['rss_above_floor_per_payload_byte']:.2f}x the 5 MB it fetches")
    libraries = [label for label in report.get("library_floors", {}) if label in report["floors"]]
    if libraries:
        print(f"{'':<{w}}libraries: rows import alone what a path cannot do without; a wall target "
              f"below its row's ratio\n{'':<{w}}is out of reach with those libraries")
    sink = report["floors"].get(report["sendmail"].get("row"))
    if sink and stand_in:
        print(f"{'':<{w}}every mail but 'ignored' includes one run of the sendmail stand-in "
              f"({sink['wall_s']['median'] * 1000:.0f} ms wall, {sink['cpu_s']['median'] * 1000:.0f} ms CPU);\n"
              f"{'':<{w}}the wall targets are judged without it (-sendmail): it is the MTA's cost")
    elif sink:
        print(f"{'':<{w}}every mail but 'ignored' includes one run of msmtp to the loopback sink "
              f"({sink['wall_s']['median'] * 1000:.0f} ms wall, {sink['cpu_s']['median'] * 1000:.0f} ms CPU),\n"
              f"{'':<{w}}as in production; the wall targets are judged on the whole wall")
    if report.get("breakdown"):
        print_breakdown(report["breakdown"])
    print_hostile(report, w)
    tp = report.get("throughput")
    if tp:
        print_throughput(tp, stand_in, targets[("throughput", "text x8")]["limit"])
    print()
    phases = (("per-mail runs", report["load"]), ("import-time runs", (report.get("breakdown") or {}).get("load", {})),
              ("throughput run", (tp or {}).get("load", {})))
    others = [f"{load['foreign_cores']:.2f} cores during the {phase}" for phase, load in phases
              if "foreign_cores" in load]
    if others:
        print("other work on the machine: " + ", ".join(others))
    for _, load in phases:
        if load.get("warning"):
            print(f"WARNING: {load['warning']}")
    passed = sum(t["pass"] for t in report["targets"])
    print(f"targets: {passed}/{len(report['targets'])} pass: " + ", ".join(
        f"{t['case']} {t['metric']} {verdict(t['pass'])}" for t in report["targets"]))
    if report["failures"]:
        print()
        print(f"!!! {len(report['failures'])} FAILED RUN(S): the numbers above are not trustworthy")
        for failure in report["failures"]:
            print(f"!!!   {failure}")


def print_breakdown(breakdown: dict) -> None:
    """Where each millisecond of a path's wall goes: a column per path, then its costliest modules."""
    paths = breakdown["paths"]
    names = list(paths)
    label_w, col_w = 32, 16
    print()
    print(f"where each millisecond goes: the median wall above shared out; imports timed with -X importtime "
          f"({breakdown['importtime_runs']} runs a path)\nand scaled to the wall of importing just the modules "
          f"the path loaded, as the pipe does, less `-c pass`; ms and share of the wall")
    header = f"{'':<{label_w}}" + "".join(f"{name:>{col_w}}" for name in names)
    print(header)
    print("-" * len(header))

    def row(label: str, value_of, share: bool = True) -> None:
        cells = []
        for name in names:
            value = value_of(paths[name])
            if value is None:
                cells.append(f"{'-':>{col_w}}")
            elif share:
                cells.append(f"{value * 1000:{col_w - 5}.1f}{value / paths[name]['wall_s'] * 100:4.0f}%")
            else:
                cells.append(f"{value * 1000:{col_w - 5}.1f}{'':5}")
        print(f"{label:<{label_w}}" + "".join(cells))

    row("wall", lambda entry: entry["wall_s"], share=False)
    row("python start-up (-c pass)", lambda entry: entry["startup_s"])
    for group in breakdown["groups"]:
        row(f"  imports: {group}", lambda entry, group=group: entry["imports_s"].get(group))
    row("imports, all", lambda entry: entry["imports_total_s"])
    if any(entry["website_s"] for entry in paths.values()):
        row("website", lambda entry: entry["website_s"])
    row("sendmail (the sink row above)", lambda entry: entry["sendmail_s"])
    row("gateway work (the rest)", lambda entry: entry["gateway_work_s"])
    print(f"{'modules loaded past start-up':<{label_w}}" + "".join(f"{paths[n]['modules']:>{col_w - 5}}{'':5}"
                                                                for n in names))
    ratios = [paths[n]["importtime_over_import_only"] for n in names]
    print(f"{'-X importtime / import-only':<{label_w}}"
          + "".join(f"{'-':>{col_w - 5}}{'':5}" if r is None else f"{r:{col_w - 6}.2f}x{'':5}" for r in ratios))
    print("the ten most expensive modules by self time, ms (scaled like the imports above):")
    for name in names:
        line = f"  {name}:"
        for i, module in enumerate(paths[name]["top_modules"]):
            item = f"{module['module']} {module['self_s'] * 1000:.1f}"
            if len(line) + len(item) + 2 > 131:
                print(line + ",")
                line = "    " + item
            else:
                line += (" " if i == 0 else ", ") + item
        print(line)


def print_hostile(report: dict, w: int) -> None:
    """The hostile mails against their targets, and the get over any sane size."""
    targets = {(t["metric"], t["case"]): t for t in report["targets"]}
    hostile = {name: entry for name, entry in report["mails"].items() if entry.get("group") == "hostile"}
    if hostile:
        first = next(iter(hostile))
        print()
        print(f"hostile mails (issue 12): peak RSS above the `import requests, mailparser` floor at most "
              f"{targets[('rss', first)]['limit']:g}x the mail, at most {targets[('seconds', first)]['limit']:g} s")
        header = (f"{'case':<{w}}{'size':>9}{'n':>4}  {'wall ms (±½IQR)':<17}{'CPU ms':>8}{'RSS MB':>8}"
                  f"  {'wall/floor':>10}  {'ΔRSS/size':>9}        {'outcome'}")
        print(header)
        print("-" * len(header))
        for name, entry in hostile.items():
            rss_t, seconds_t = targets[("rss", name)], targets[("seconds", name)]
            print(f"{name:<{w}}{_size(entry['message_bytes']):>9}{entry['wall_s']['n']:>4}  "
                  f"{_ms(entry['wall_s']):<17}{entry['cpu_s']['median'] * 1000:8.1f}"
                  f"{entry['maxrss_kb']['median'] / KB:8.1f}  {entry['wall_over_import_mailparser_floor']:9.1f}x"
                  f"  {entry['rss_above_floor_per_message_byte']:8.2f}x {verdict(rss_t['pass'] and seconds_t['pass'])}"
                  f"   {','.join(entry['outcomes'])}")
    big = report["mails"].get("get-200MB")
    if big:
        replies = big["replies"]["median"]
        print()
        print(f"get over any sane size ({big['about']}):")
        print(f"  wall {big['wall_s']['median']:.2f} s (website {big['website_s']['median']:.2f} s), "
              f"CPU {big['cpu_s']['median']:.2f} s, peak RSS {big['maxrss_kb']['median'] / KB:.0f} MB "
              f"(ΔRSS {big['rss_above_floor_per_payload_byte']:.2f}x the {_size(big['payload_bytes'])} fetched), "
              f"exit {','.join(map(str, big['exit_codes']))}, outcome {','.join(big['outcomes']) or '?'}, "
              f"{replies:g} repl{'y' if replies == 1 else 'ies'} of {_size(int(big['reply_bytes']['median']))}")


def print_throughput(tp: dict, stand_in: bool, target: float) -> None:
    print()
    print(f"throughput: {tp['mails']} text responses, {tp['concurrency']} concurrent pipes, website "
          f"answering in {tp['website_delay_s'] * 1000:.0f} ms")
    print(f"  {tp['messages_per_s']:.2f} msg/s in {tp['elapsed_s']:.1f} s; per pipe under load: wall "
          f"{tp['wall_s']['median'] * 1000:.0f} ms, CPU {tp['cpu_s']['median'] * 1000:.0f} ms (median); "
          f"bench process ({'website' if stand_in else 'website, SMTP sink'}) CPU "
          f"{tp['bench_process_cpu_s_per_message'] * 1000:.1f} ms/msg")
    print(f"  bound = min({tp['concurrency']} / ({tp['website_delay_s']:.3f} + "
          f"{tp['single_pipe_wall_without_website_s']:.3f}) = {tp['latency_bound_per_s']:.2f}, "
          f"{tp['cores']} cores / {tp['single_pipe_cpu_s']:.3f} s = {tp['cpu_bound_per_s']:.2f}) "
          f"= {tp['bound_per_s']:.2f} msg/s ({tp['bound_by']})")
    ok = tp["fraction_of_bound"] >= target
    print(f"  throughput / bound = {tp['fraction_of_bound'] * 100:.0f}%   "
          f"{verdict(ok)} (target ≥ {target * 100:.0f}%)")
    scaling = tp.get("machine_scaling")
    if scaling:
        print(f"  CPU per process with all cores busy: the pipe {tp['single_pipe_cpu_s'] * 1000:.0f} -> "
              f"{tp['cpu_s']['median'] * 1000:.0f} ms ({tp['cpu_increase_under_load'] * 100:+.0f}%); "
              f"the machine alone, {scaling['probe']} x{tp['concurrency']}: "
              f"{scaling['cpu_alone_s'] * 1000:.0f} -> {scaling['cpu_s']['median'] * 1000:.0f} ms "
              f"({scaling['cpu_increase_under_load'] * 100:+.0f}%)")
