#!/usr/bin/env python3
"""Medians, ratios, the Markdown tables and the SVG ratio chart of a peers.sh run.

Used by run.py at the end of a run; can also be run by hand on a saved result:
    python3 benches/tools/report.py benches/results/latest.json [OUT_DIR]
which rewrites latest.md and ratios.svg next to it (or in OUT_DIR). Standard library only.
"""

import html
import json
import os
import statistics
import sys

ORDER = ["direct", "watchtower", "nginx", "haproxy", "tinyproxy", "squid", "privoxy", "mitmproxy"]
LABEL = {"direct": "direct (no proxy)", "watchtower": "**Watchtower**", "nginx": "nginx", "haproxy": "HAProxy",
         "tinyproxy": "tinyproxy", "squid": "Squid", "privoxy": "Privoxy", "mitmproxy": "mitmproxy (mitmdump)"}
COLOR = {"watchtower": "#d9480f", "nginx": "#2b8a3e", "haproxy": "#1971c2", "tinyproxy": "#7048e8",
         "squid": "#f59f00", "privoxy": "#0c8599", "mitmproxy": "#868e96"}


def fmt_rate(v, unit):
    if v is not None and unit == "GB/s":
        return f"{v:.2f}"
    return fmt_cpu(v)


def fmt_us(v):
    if v is None:
        return "—"
    if v >= 10000:
        return f"{v / 1000:.0f} ms"
    if v >= 1000:
        return f"{v / 1000:.1f} ms"
    return f"{v:.0f} µs"


def fmt_cpu(v):
    """A count or cost: whole numbers with separators from 100 up, one decimal below."""
    if v is None:
        return "—"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.1f}"


def fmt_ratio(v):
    return "—" if v is None else f"{v:.2f}×"


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def summarize_scenario(entry):
    """Adds, per member, the median of each figure over its successful runs, and the ratios."""
    for m, d in entry["members"].items():
        ok = [r for r in d["runs"] if r.get("ok")]
        failed = [r for r in d["runs"] if not r.get("ok")]
        d["ok_runs"] = len(ok)
        d["failed_runs"] = len(failed)
        if failed:
            d["error"] = failed[-1].get("error")
        if not ok:
            d["status"] = "failed"
            d["median"] = None
            continue
        d["status"] = "ok"
        d["median"] = dict(
            rate=_median([r["rate"] for r in ok]),
            p50_us=_median([r.get("p50_us") for r in ok]),
            p99_us=_median([r.get("p99_us") for r in ok]),
            cpu_per_unit=_median([r.get("cpu_per_unit") for r in ok]),
            errors=sum(r.get("errors", 0) for r in ok),
            count=sum(r.get("count", 0) for r in ok),
        )
        infos = [r.get("info") for r in ok if r.get("info")]
        if infos:
            d["info"] = infos[0]
    base = entry["members"].get("direct", {}).get("median")
    wt = entry["members"].get("watchtower", {}).get("median")
    for m, d in entry["members"].items():
        med = d.get("median")
        if not med:
            continue
        med["x_direct"] = med["rate"] / base["rate"] if base and base["rate"] else None
        med["x_watchtower"] = med["rate"] / wt["rate"] if wt and wt["rate"] else None
        med["cpu_x_watchtower"] = (med["cpu_per_unit"] / wt["cpu_per_unit"]
                                   if wt and wt.get("cpu_per_unit") and med.get("cpu_per_unit") else None)


def _ordered(names):
    return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else 99)


def _tls_short(info):
    # "TLSv1.3 TLS_AES_256_GCM_SHA384 group=X25519 key=id-ecPublicKey-256 resumed=0"
    parts = info.split()
    out = []
    for p in parts:
        if p.startswith("key="):
            k = p[4:].replace("id-ecPublicKey", "EC").replace("rsaEncryption", "RSA")
            out.append(k)
        elif p.startswith("group="):
            out.append(p[6:])
        elif p.startswith("resumed="):
            continue
        else:
            out.append(p)
    return " ".join(out)


def scenario_table(entry):
    unit, cu = entry["unit"], entry["cpu_unit"]
    lines = [f"### {entry['title']}", "", f"_{entry['how']}_", "",
             f"| proxy | {unit} | p50 | p99 | CPU {cu} | × direct | × Watchtower | CPU × Watchtower | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in _ordered(entry["members"].keys()):
        d = entry["members"][m]
        med = d.get("median")
        label = LABEL.get(m, m)
        if not med:
            lines.append(f"| {label} | failed | | | | | | | {_cell(d.get('error'))} |")
            continue
        notes = []
        if d.get("failed_runs"):
            notes.append(f"{d['failed_runs']} of {d['failed_runs'] + d['ok_runs']} runs failed: {d.get('error')}")
        if med.get("errors"):
            notes.append(f"{med['errors']} errors / {med['count']:,} done")
        if d.get("info"):
            notes.append(_tls_short(d["info"]))
        lat = med.get("p50_us") is not None
        lines.append(
            f"| {label} | {fmt_rate(med['rate'], unit)} | {fmt_us(med['p50_us']) if lat else '—'} | "
            f"{fmt_us(med['p99_us']) if lat else '—'} | {fmt_cpu(med.get('cpu_per_unit'))} | "
            f"{fmt_ratio(med.get('x_direct')) if m != 'direct' else '1.00×'} | "
            f"{fmt_ratio(med.get('x_watchtower'))} | "
            f"{fmt_ratio(med.get('cpu_x_watchtower')) if m != 'direct' else '—'} | {_cell('; '.join(notes))} |")
    return "\n".join(lines)


def _cell(s):
    if not s:
        return ""
    s = str(s).replace("|", "\\|").replace("\n", " ")
    return s if len(s) < 220 else s[:217] + "..."


def summary_table(data):
    lines = ["### Summary", "",
             "_Watchtower against the limit (direct) and against the best peer of each scenario; CPU is the "
             "proxy's own CPU time per unit of work, lower is better._", "",
             "| scenario | direct | Watchtower | × direct | best peer | Watchtower ÷ best peer | "
             "Watchtower CPU | cheapest peer CPU | Watchtower CPU ÷ cheapest |",
             "|---|---:|---:|---:|---|---:|---:|---|---:|"]
    for e in data["scenarios"]:
        ms = e["members"]
        unit, cu = e["unit"], e["cpu_unit"]
        d = (ms.get("direct") or {}).get("median")
        w = (ms.get("watchtower") or {}).get("median")
        peers = [(n, x["median"]) for n, x in ms.items()
                 if n not in ("direct", "watchtower") and x.get("median")]
        best = max(peers, key=lambda t: t[1]["rate"]) if peers else None
        cheap = [t for t in peers if t[1].get("cpu_per_unit")]
        cheap = min(cheap, key=lambda t: t[1]["cpu_per_unit"]) if cheap else None
        name = lambda n: LABEL.get(n, n).split(" (")[0]  # noqa: E731
        row = [e.get("short") or e["title"],
               f"{fmt_rate(d['rate'], unit)} {unit}" if d else "failed",
               f"{fmt_rate(w['rate'], unit)}" if w else ("failed" if "watchtower" in ms else "—"),
               fmt_ratio(w.get("x_direct")) if w else "—",
               f"{name(best[0])} {fmt_rate(best[1]['rate'], unit)}" if best else "—",
               fmt_ratio(w["rate"] / best[1]["rate"]) if w and best and best[1]["rate"] else "—",
               f"{fmt_cpu(w.get('cpu_per_unit'))} {cu}" if w and w.get("cpu_per_unit") else "—",
               f"{name(cheap[0])} {fmt_cpu(cheap[1]['cpu_per_unit'])}" if cheap else "—",
               fmt_ratio(w["cpu_per_unit"] / cheap[1]["cpu_per_unit"])
               if w and w.get("cpu_per_unit") and cheap else "—"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def footprint_table(data):
    names = set(data.get("memory", {})) | set(data.get("startup", {})) | set(data.get("binary", {}))
    lines = ["### Footprint", "",
             "_RSS = VmRSS summed over the proxy's process tree (master + workers); per idle tunnel = "
             "(RSS with the tunnels open − RSS just before) / tunnels; start-up = spawn to first accepted "
             "TCP connection, median of the runs; binary = the executable file alone (Debian's are stripped; "
             "shared libraries not counted)._", "",
             "| proxy | binary | start-up | idle RSS | RSS after the runs | per idle tunnel | notes |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for n in _ordered(names):
        mem = data.get("memory", {}).get(n, {})
        st = data.get("startup", {}).get(n, {})
        b = data.get("binary", {}).get(n, {})
        notes = []
        binary = f"{b['bytes'] / 1e6:.2f} MB" if b.get("bytes") else "—"
        if b.get("note"):
            binary = f"{b['bytes'] / 1e3:.1f} kB*"
            notes.append(f"*{b['note']} ({(b.get('package_installed_kib') or 0) / 1024:.1f} MiB installed)")
        startup = f"{st['median_ms']:.1f} ms" if st.get("ok") else ("failed" if st else "—")
        if st and not st.get("ok"):
            notes.append(f"start-up: {st.get('error')}")
        tun = mem.get("tunnels") or {}
        per = (f"{tun['per_tunnel_kib']:.1f} KiB" if tun.get("ok") and tun.get("per_tunnel_kib") is not None
               else ("failed" if tun else "—"))
        if tun and not tun.get("ok"):
            notes.append(f"tunnels: {tun.get('error')}")
        if tun.get("note"):
            notes.append(tun["note"])
        if mem.get("error"):
            notes.append(f"died: {mem['error']}")
        mib = lambda k: f"{mem[k] / 1024:.1f} MiB" if mem.get(k) else "—"  # noqa: E731
        lines.append(f"| {LABEL.get(n, n)} | {binary} | {startup} | {mib('idle_rss_kib')} | "
                     f"{mib('after_rss_kib')} | {per} | {_cell('; '.join(notes))} |")
    return "\n".join(lines)


def markdown(data):
    s = data["settings"]
    m = data["machine"]
    v = data.get("versions", {})
    out = [
        "# Watchtower side by side",
        "",
        f"- date: {data['date']}; command: `{data['command']}`"
        + (f" with DURATION={s['DURATION']:g}" if s["DURATION"] != 10 else "")
        + (f", ONLY={s['ONLY']}" if s.get("ONLY") else "") + (f", SCENARIOS={s['SCENARIOS']}" if s.get("SCENARIOS") else ""),
        f"- machine: {m['cpu_model']}, {m['nproc']} cores, {m['mem_total']}; `{m['uname']}`",
        f"- method: each figure is the median of {s['RUNS']} runs of {s['DURATION']:g} s, run interleaved; "
        f"every proxy pinned to core {s['proxy_cpu']}, the load generator and the backend (nginx, one worker) "
        f"on core {s['load_cpu']}; CPU = utime+stime of the proxy's process tree from /proc/PID/stat "
        f"({s['clock_ticks_per_s']} ticks/s) over the run, divided by the work done; × direct and × Watchtower "
        "are throughput ratios; CPU × Watchtower is the ratio of CPU cost (lower is cheaper).",
        "- versions: " + "; ".join(f"{k}: {x}" for k, x in v.items()),
    ]
    if data.get("notes"):
        out.append("- settings: " + "; ".join(f"{k}: {', '.join(x)}" for k, x in data["notes"].items()))
    if data.get("skipped"):
        out.append("- skipped: " + "; ".join(f"{k} ({x})" for k, x in data["skipped"].items()))
    if data.get("probes"):
        out.append("- failed probes: " + "; ".join(f"{k}: {', '.join(x)}" for k, x in data["probes"].items()))
    if data.get("failures"):
        out.append("- failed during the run: " + "; ".join(f"{k}: {_cell(x)}" for k, x in data["failures"].items()))
    if "elapsed_s" in data:
        out.append(f"- run time: {data['elapsed_s'] / 60:.1f} min; load average at the start: {m.get('loadavg', '?')}")
    out.append("")
    for e in data["scenarios"]:
        if "median" not in next(iter(e["members"].values()), {}):
            summarize_scenario(e)
    if data["scenarios"]:
        out.append(summary_table(data))
        out.append("")
    for e in data["scenarios"]:
        out.append(scenario_table(e))
        out.append("")
    out.append(footprint_table(data))
    out.append("")
    out.append("![throughput ratio to direct](ratios.svg)")
    out.append("")
    return "\n".join(out)


def svg(data):
    scen = [e for e in data["scenarios"]]
    label_w, bar_w, right = 300, 520, 70
    bar_h, gap, group_gap, top = 13, 3, 14, 78
    rows = []
    y = top
    maxr = 1.0
    for e in scen:
        ms = [m for m in _ordered(e["members"].keys()) if m != "direct"]
        rows.append(("group", e, y))
        gh = max(1, len(ms)) * (bar_h + gap)
        for i, m in enumerate(ms):
            med = e["members"][m].get("median")
            r = med.get("x_direct") if med else None
            if r is not None:
                maxr = max(maxr, r)
            rows.append(("bar", (e, m, r), y + i * (bar_h + gap)))
        y += gh + group_gap
    height = y + 58
    width = label_w + bar_w + right
    axis_max = max(1.25, min(maxr * 1.05, 10))
    sx = lambda r: label_w + bar_w * min(r, axis_max) / axis_max  # noqa: E731
    p = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="11">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">'
         f'Throughput relative to no proxy (direct = 1.0), median of {data["settings"]["RUNS"]} runs</text>',
         f'<text x="{width / 2}" y="36" text-anchor="middle" fill="#555">{html.escape(data["date"])} · '
         f'{html.escape(data["machine"]["cpu_model"])} · proxy on one pinned core · longer is better</text>']
    # legend
    present = [n for n in ORDER if n != "direct" and any(n in e["members"] for e in scen)]
    lx = label_w
    for n in present:
        p.append(f'<rect x="{lx}" y="46" width="11" height="11" fill="{COLOR.get(n, "#999")}"/>')
        name = "Watchtower" if n == "watchtower" else LABEL.get(n, n).split(" (")[0]
        p.append(f'<text x="{lx + 15}" y="55.5">{html.escape(name)}</text>')
        lx += 20 + 7 * len(name) + 12
    # grid
    step = 0.25 if axis_max <= 2 else 0.5 if axis_max <= 4 else 1.0
    t = 0.0
    while t <= axis_max + 1e-9:
        x = sx(t)
        strong = abs(t - 1.0) < 1e-9
        style = 'stroke="#333" stroke-width="1.2"' if strong else 'stroke="#ddd" stroke-dasharray="3,3"'
        p.append(f'<line x1="{x:.1f}" y1="{top - 8}" x2="{x:.1f}" y2="{y - group_gap + 4}" {style}/>')
        p.append(f'<text x="{x:.1f}" y="{y - group_gap + 18}" text-anchor="middle" fill="#555">{t:g}×</text>')
        t += step
    for kind, obj, yy in rows:
        if kind == "group":
            e = obj
            title = e.get("short") or e["title"]
            unit = e["unit"]
            base = (e["members"].get("direct") or {}).get("median")
            sub = f"direct: {fmt_rate(base['rate'], unit)} {unit}" if base else "direct: failed"
            p.append(f'<text x="{label_w - 8}" y="{yy + 10}" text-anchor="end" font-weight="bold">'
                     f'{html.escape(_wrap(title, 46))}</text>')
            p.append(f'<text x="{label_w - 8}" y="{yy + 24}" text-anchor="end" fill="#555">{html.escape(sub)}</text>')
        else:
            e, m, r = obj
            color = COLOR.get(m, "#999")
            if r is None:
                p.append(f'<text x="{label_w + 4}" y="{yy + bar_h - 3}" fill="#c00">'
                         f'{html.escape(m)}: failed</text>')
                continue
            x1 = sx(r)
            p.append(f'<rect x="{label_w}" y="{yy}" width="{max(x1 - label_w, 1):.1f}" height="{bar_h}" '
                     f'fill="{color}"><title>{html.escape(m)}: {r:.3f}× direct</title></rect>')
            more = "▸" if r > axis_max else ""
            p.append(f'<text x="{x1 + 4:.1f}" y="{yy + bar_h - 3}" fill="#222">{r:.2f}×{more}</text>')
    p.append(f'<text x="8" y="{height - 26}" fill="#555" font-size="10">TLS rows: direct = the backend terminating '
             'TLS itself on the load core, so it is not an upper bound.</text>')
    p.append(f'<text x="8" y="{height - 12}" fill="#555" font-size="10">New-connection rates are bounded by the '
             'OpenSSL client on the load core: compare the CPU columns in latest.md.</text>')
    p.append("</svg>")
    return "\n".join(p)


def _wrap(s, n):
    return s if len(s) <= n else s[: n - 1] + "…"


def write_all(data, out_dir):
    for e in data["scenarios"]:
        summarize_scenario(e)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "latest.json"), "w") as f:
        json.dump(data, f, indent=1, ensure_ascii=False)
    with open(os.path.join(out_dir, "latest.md"), "w") as f:
        f.write(markdown(data))
    with open(os.path.join(out_dir, "ratios.svg"), "w") as f:
        f.write(svg(data))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: report.py latest.json [OUT_DIR]")
    src = sys.argv[1]
    d = json.load(open(src))
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.dirname(os.path.abspath(src))
    write_all(d, out)
    print(open(os.path.join(out, "latest.md")).read())
