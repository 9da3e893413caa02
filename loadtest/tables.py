"""The bench's human output: a plain-text table per kind of JSON line (see report.py)."""

from __future__ import annotations

from typing import Any


def _fmt(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


PAIRS_COLS = [  # (header, key, decimals)
    ("target", "target", 0),
    ("topo", "topology", 0),
    ("rate", "rate_offered", 0),
    ("msgs", "planned", 0),
    ("msgs/s", "msgs_per_s", 0),
    ("p50 ms", "p50_ms", 1),
    ("p95 ms", "p95_ms", 1),
    ("p99 ms", "p99_ms", 1),
    ("max ms", "max_ms", 1),
    ("lost", "lost", 0),
    ("dup", "dup", 0),
    ("srv CPU s", "server_cpu_s", 2),
    ("CPU ms/msg", "server_cpu_ms_per_msg", 3),
    ("srv RSS MB", "server_rss_peak_mb", 0),
    ("infra CPU s", "infra_cpu_s", 2),
    ("client CPU s", "client_cpu_s", 2),
]


KIND_COLS: dict[str, list[tuple[str, str, int]]] = {
    "groups": [
        ("topo", "topology", 0),
        ("G x S", "shape", 0),
        ("rate", "rate_offered", 0),
        ("msgs in/s", "msgs_in_per_s", 0),
        ("deliv/s", "deliveries_per_s", 0),
        ("p50 ms", "p50_ms", 1),
        ("p99 ms", "p99_ms", 1),
        ("lost", "lost", 0),
        ("dup", "dup", 0),
        ("dropped", "dropped", 0),
        ("srv CPU s", "server_cpu_s", 2),
        ("CPU us/deliv", "server_cpu_us_per_delivery", 2),
        ("infra CPU s", "infra_cpu_s", 2),
        ("client CPU s", "client_cpu_s", 2),
    ],
    "connections": [
        ("topo", "topology", 0),
        ("conns", "connections", 0),
        ("rate", "rate_offered", 0),
        ("connect s", "connect_all_s", 2),
        ("KiB/conn", "rss_per_conn_kib", 1),
        ("msgs/s", "msgs_per_s", 0),
        ("p50 ms", "p50_ms", 1),
        ("p99 ms", "p99_ms", 1),
        ("p99 first ms", "p99_first_in_chat_ms", 1),
        ("p99 warm ms", "p99_warm_ms", 1),
        ("lost", "lost", 0),
        ("dup", "dup", 0),
        ("dropped", "dropped", 0),
        ("srv CPU s", "server_cpu_s", 2),
        ("CPU ms/msg", "server_cpu_ms_per_msg", 3),
        ("client CPU s", "client_cpu_s", 2),
    ],
    "storm": [
        ("devices", "devices", 0),
        ("backlog", "backlog", 0),
        ("ready", "devices_ready", 0),
        ("reconnect s", "reconnect_s", 2),
        ("caught up", "devices_caught_up", 0),
        ("caught up s", "caught_up_s", 2),
        ("lost", "lost", 0),
        ("dup", "dup", 0),
        ("dup after ack", "dup_after_ack", 0),
        ("dropped", "dropped", 0),
        ("conn fails", "connect_failures", 0),
        ("pg xact/dev", "pg_xacts_per_device", 2),
        ("pg rows/dev", "pg_rows_per_device", 1),
        ("srv CPU s", "server_cpu_s", 2),
        ("infra CPU s", "infra_cpu_s", 2),
    ],
    "presence": [
        ("group", "group_size", 0),
        ("direct", "direct_users", 0),
        ("ready", "devices_ready", 0),
        ("ready s", "all_ready_s", 2),
        ("pres frames", "presence_frames", 0),
        ("frames/dev", "presence_frames_per_device", 1),
        ("users/dev", "presence_users_per_device", 1),
        ("peer missed", "direct_peer_missed", 0),
        ("upd failed", "presence_update_failed", 0),
        ("dropped", "dropped", 0),
        ("conn fails", "connect_failures", 0),
        ("lost", "lost", 0),
        ("dup", "dup", 0),
        ("srv CPU s", "server_cpu_s", 2),
    ],
    "idle": [
        ("server", "server", 0),
        ("conns", "connections", 0),
        ("RSS before MB", "rss_before_mb", 1),
        ("RSS after MB", "rss_after_mb", 1),
        ("KiB/conn", "rss_per_conn_kib", 1),
        ("connect s", "connect_s", 2),
        ("open", "open_at_end", 0),
    ],
}


def kind_table(kind: str, lines: list[dict[str, Any]]) -> str:
    cols = KIND_COLS[kind]
    rows = [[h for h, _, _ in cols]]
    for ln in lines:
        row = []
        for _, key, nd in cols:
            v = ln.get(key)
            if key == "rate_offered":
                v = "max" if not v else _fmt(float(v), 0)
            elif key == "shape":
                v = f"{ln.get('groups')}x{ln.get('group_size')}"
            row.append(_fmt(v, nd))
        rows.append(row)
    return _render(rows)


def table(lines: list[dict[str, Any]]) -> str:
    """A table of pairs/soak lines, then one per other kind; failed runs and soaks in words."""
    out = []
    runs = [ln for ln in lines if ln["kind"] in ("pairs", "soak")]
    if runs:
        rows = [[h for h, _, _ in PAIRS_COLS]]
        for ln in runs:
            row = []
            for _, key, nd in PAIRS_COLS:
                v = ln.get(key)
                if key == "rate_offered":
                    v = "max" if not v else _fmt(float(v), 0)
                row.append(_fmt(v, nd))
            rows.append(row)
        out.append(_render(rows))
    for ln in lines:
        if "error" in ln:
            out.append(f"FAILED {ln['kind']} {ln.get('topology', '')}: {ln['error'][:300]}")
        elif ln["kind"] == "soak":
            out.append(
                f"soak {ln['duration_s']:.0f}s at {ln['rate_offered']:.0f} msgs/s: node RSS "
                f"start {ln['rss_start_mb']} MB, end {ln['rss_end_mb']} MB, "
                f"min {ln['rss_min_mb']} MB, max {ln['rss_max_mb']} MB; after "
                f"{ln['warmup_s']:.0f}s warm-up within ±10% of {ln['rss_baseline_mb']} MB: "
                f"{'yes' if ln['rss_stable'] else 'NO'}"
            )
    for kind in KIND_COLS:
        ok = [ln for ln in lines if ln.get("kind") == kind and "error" not in ln]
        if ok:
            out.append(kind_table(kind, ok))
    return "\n\n".join(out)


def _render(rows: list[list[str]]) -> str:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    text = []
    for n, r in enumerate(rows):
        text.append(
            "  ".join(
                v.ljust(w) if c < 2 else v.rjust(w)
                for c, (v, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)
