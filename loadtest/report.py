"""Turning worker results into the bench's output: one JSON line per configuration (medians over
repeats) and a human table."""

from __future__ import annotations

import json
import statistics
import time
from array import array
from typing import Any

# counters that should be 0: over repeats the worst run is reported, never a median
WORST = (
    "lost",
    "dup",
    "out_of_order",
    "misrouted",
    "unconfirmed",
    "send_errors",
    "server_log_errors",
    "dropped",
    "dup_after_ack",
    "presence_update_failed",
    "direct_peer_missed",
)
SUMMED = (
    "sent",
    "confirmed",
    "delivered",
    "dup",
    "out_of_order",
    "misrouted",
    "send_errors",
    "other_errors",
    "lost",
    "unconfirmed",
    "dropped",
)
MB = 1024 * 1024


def pct(sorted_vals: Any, q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence."""
    if not len(sorted_vals):
        return None
    k = min(len(sorted_vals) - 1, max(0, round(q / 100 * (len(sorted_vals) - 1))))
    return float(sorted_vals[k])


def ms(ns: float | None) -> float | None:
    return None if ns is None else round(ns / 1e6, 3)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the workers' counters; latencies pooled and sorted."""
    out: dict[str, Any] = {k: sum(r[k] for r in results) for k in SUMMED}
    lat = array("q")
    for r in results:
        lat.extend(r["lat"])
    out["lat"] = sorted(lat)
    for key in ("lat_first", "lat_warm"):  # pairs-shaped workers only
        if all(key in r for r in results):
            part = array("q")
            for r in results:
                part.extend(r[key])
            out[key] = sorted(part)
    out["first_send"] = min((r["first_send"] for r in results if r["first_send"]), default=0)
    out["last_recv"] = max((r["last_recv"] for r in results), default=0)
    out["max_lag"] = max((r["max_lag"] for r in results), default=0)
    out["client_cpu"] = sum(r["cpu"] for r in results)
    out["timed_out"] = any(r["timed_out"] for r in results)
    out["drained"] = all(r["drained"] for r in results)
    codes: dict[str, int] = {}
    for r in results:
        for code, n in r["error_codes"].items():
            codes[code] = codes.get(code, 0) + n
    out["error_codes"] = codes
    out["first_error"] = next((r["first_error"] for r in results if r["first_error"]), "")
    return out


def pairs_line(m: dict[str, Any], base: dict[str, Any], server: dict[str, Any]) -> dict[str, Any]:
    """The JSON line of one pairs run: `base` (configuration), merged results, server figures."""
    lat = m["lat"]
    wall = (m["last_recv"] - m["first_send"]) / 1e9 if m["last_recv"] > m["first_send"] else None
    cpu = server.get("server_cpu_s")
    line = dict(base)
    line.update(
        {
            "planned": base["pairs"] * base["messages"],
            "sent": m["sent"],
            "confirmed": m["confirmed"],
            "delivered": m["delivered"],
            "lost": m["lost"],
            "dup": m["dup"],
            "out_of_order": m["out_of_order"],
            "misrouted": m["misrouted"],
            "unconfirmed": m["unconfirmed"],
            "send_errors": m["send_errors"],
            "dropped": m["dropped"],
            "error_frames": m["error_codes"],
            "msgs_per_s": round(m["delivered"] / wall, 1) if wall else 0.0,
            "wall_s": round(wall, 3) if wall else None,
            "p50_ms": ms(pct(lat, 50)),
            "p95_ms": ms(pct(lat, 95)),
            "p99_ms": ms(pct(lat, 99)),
            "max_ms": ms(lat[-1] if lat else None),
            "max_send_lag_ms": ms(m["max_lag"]),
            **server,
            "server_cpu_ms_per_msg": (
                round(cpu * 1000 / m["delivered"], 3)
                if cpu is not None and m["delivered"]
                else None
            ),
            "client_cpu_s": round(m["client_cpu"], 2),
        }
    )
    if m["first_error"]:
        line["first_error"] = m["first_error"]
    if m["timed_out"]:
        line["timed_out"] = True
    if not m["drained"]:
        line["drain_timed_out"] = True
    line["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return line


def median_line(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """One line for repeats of a configuration: medians of numbers, worst of the zero-counters."""
    if len(lines) == 1:
        return {**lines[0], "repeats": 1}
    ok = [ln for ln in lines if "error" not in ln] or lines
    out = dict(ok[-1])
    if len(ok) < len(lines):
        out["error"] = "; ".join(ln["error"] for ln in lines if "error" in ln)
        out["failed_runs"] = len(lines) - len(ok)
    lines = ok
    for key, value in lines[-1].items():
        vals: list[float] = [
            ln[key] for ln in lines if isinstance(ln.get(key), int | float) and ln[key] is not True
        ]
        if isinstance(value, bool) or len(vals) != len(lines):
            continue
        if key in WORST:
            out[key] = max(vals)
        else:
            med = statistics.median(vals)
            out[key] = round(med, 3) if isinstance(med, float) else med
    out["repeats"] = len(lines)
    out["msgs_per_s_runs"] = [ln.get("msgs_per_s") for ln in lines]
    return out


def soak_fields(samples: list[tuple[float, int]], duration: float, warmup: float) -> dict[str, Any]:
    during = [(t, b) for t, b in samples if t >= 0] or samples
    mb = [b / MB for _, b in during]
    after = [b / MB for t, b in during if t >= warmup]
    base = after[0] if after else mb[-1]
    stable = all(abs(v - base) <= 0.1 * base for v in after)
    return {
        "kind": "soak",
        "duration_s": duration,
        "warmup_s": warmup,
        "rss_start_mb": round(mb[0], 1),
        "rss_end_mb": round(mb[-1], 1),
        "rss_min_mb": round(min(mb), 1),
        "rss_max_mb": round(max(mb), 1),
        "rss_baseline_mb": round(base, 1),
        "rss_stable": stable,
        "rss_samples_mb": [[round(t, 1), round(b / MB, 1)] for t, b in during],
    }


def dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, separators=(",", ":"))


# ---------------------------------------------------------------------------- other workloads
def pooled(results: list[dict[str, Any]], key: str = "lat") -> list[int]:
    lat = array("q")
    for r in results:
        lat.extend(r[key])
    return sorted(lat)


def codes(results: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in results:
        for code, n in r["error_codes"].items():
            out[code] = out.get(code, 0) + n
    return out


def latency_fields(lat: list[int]) -> dict[str, Any]:
    return {
        "p50_ms": ms(pct(lat, 50)),
        "p95_ms": ms(pct(lat, 95)),
        "p99_ms": ms(pct(lat, 99)),
        "max_ms": ms(lat[-1] if lat else None),
    }


def groups_line(
    results: list[dict[str, Any]],
    base: dict[str, Any],
    server_cpu: float,
    infra_cpu: float | None,
    hwm: int,
) -> dict[str, Any]:
    """The JSON line of one groups run. Lost: per receiving member, its group's confirmed
    messages minus the unique ones it received."""
    confirmed: dict[int, int] = {}
    for r in results:
        for g, n in r["confirmed"].items():
            confirmed[int(g)] = confirmed.get(int(g), 0) + n
    lost = 0
    for r in results:
        for g, counts in r["received_per_group"].items():
            lost += sum(max(0, confirmed.get(int(g), 0) - n) for n in counts)
    sent = sum(r["sent"] for r in results)
    deliveries = sum(r["deliveries"] for r in results)
    first = min((r["first_send"] for r in results if r["first_send"]), default=0)
    last_recv = max(r["last_recv"] for r in results)
    last_confirm = max(r["last_confirm"] for r in results)
    wall = (last_recv - first) / 1e9 if last_recv > first else None
    in_wall = (last_confirm - first) / 1e9 if last_confirm > first else None
    n_conf = sum(confirmed.values())
    receivers = base["group_size"] - base["senders_per_group"]
    line = dict(base)
    line.update(
        {
            "planned": base["groups"] * base["senders_per_group"] * base["messages"],
            "deliveries_planned": base["groups"]
            * base["senders_per_group"]
            * base["messages"]
            * (base["group_size"] - 1),
            "deliveries_offered_per_s": (
                round(base["rate_offered"] * (base["group_size"] - 1), 1)
                if base["rate_offered"]
                else None
            ),
            "sent": sent,
            "confirmed": n_conf,
            "deliveries": deliveries,
            "lost": lost,
            "dup": sum(r["dup"] for r in results),
            "out_of_order": sum(r["out_of_order"] for r in results),
            "dropped": sum(r["dropped"] for r in results),
            "connect_failures": sum(r["connect_failures"] for r in results),
            "unconfirmed": sent - n_conf - sum(r["send_errors"] for r in results),
            "send_errors": sum(r["send_errors"] for r in results),
            "error_frames": codes(results),
            "msgs_in_per_s": round(n_conf / in_wall, 1) if in_wall else 0.0,
            "deliveries_per_s": round(deliveries / wall, 1) if wall else 0.0,
            "wall_s": round(wall, 3) if wall else None,
            **latency_fields(pooled(results)),
            "max_send_lag_ms": ms(max(r["max_lag"] for r in results)),
            "server_cpu_s": round(server_cpu, 2),
            "server_cpu_us_per_delivery": (
                round(server_cpu * 1e6 / deliveries, 2) if deliveries else None
            ),
            "server_rss_peak_mb": round(hwm / MB, 1),
            "infra_cpu_s": round(infra_cpu, 2) if infra_cpu is not None else None,
            "client_cpu_s": round(sum(r["cpu"] for r in results), 2),
            "receivers_per_group": receivers,
        }
    )
    first_error = next((r["first_error"] for r in results if r["first_error"]), "")
    if first_error:
        line["first_error"] = first_error
    if any(r["timed_out"] for r in results):
        line["timed_out"] = True
    if not all(r["drained"] for r in results):
        line["drain_timed_out"] = True
    line["ts"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    return line
