"""Draw the renewal storm's headline as an SVG, from results/storm.json, with no plotting library.

    python -m benchmarks.chart [RESULTS_JSON] [OUTPUT_SVG]

Defaults: benchmarks/results/storm.json and docs/assets/storm-stall.svg. The chart shows, per
contender and storm size, the median over the repetitions of the worst event-loop stall while the
renewal is in flight (the storm's figure (a), `renewal_lag`). The output depends only on the JSON,
so the committed chart is reproduced byte for byte by running this again.
"""

from __future__ import annotations

import json
import statistics
import sys
from html import escape
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "storm.json"
DEFAULT_OUTPUT = ROOT / "docs" / "assets" / "storm-stall.svg"
COLOURS = ("#4c78a8", "#f58518")  # one per storm size
WIDTH, LABEL_WIDTH, BAR, GAP, TOP = 760, 150, 18, 14, 56


def medians(results: dict) -> dict[str, dict[str, float]]:
    """{contender: {size: median renewal stall in ms}}, contenders in the file's order."""
    table: dict[str, dict[str, float]] = {}
    for size, contenders in results["sizes"].items():
        for name, measured in contenders.items():
            if name == "static header":
                continue  # never renews
            lags = [run["renewal_lag"] * 1000 for run in measured["runs"]]
            table.setdefault(name, {})[size] = statistics.median(lags)
    return table


def svg(results: dict) -> str:
    table = medians(results)
    sizes = list(results["sizes"])
    delay = results["parameters"]["token_delay_ms"]
    largest = max(value for row in table.values() for value in row.values())
    scale = (WIDTH - LABEL_WIDTH - 90) / largest
    group = len(sizes) * BAR + GAP
    height = TOP + len(table) * group + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">Worst event-loop stall while '
        f"one renewal is in flight (token endpoint +{delay} ms)</text>",
    ]
    for i, (size, colour) in enumerate(zip(sizes, COLOURS, strict=False)):
        x = LABEL_WIDTH + i * 190
        out.append(f'<rect x="{x}" y="32" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{x + 18}" y="43">{int(size):,} concurrent requests</text>')
    for row, (name, values) in enumerate(table.items()):
        y = TOP + row * group
        out.append(f'<text x="10" y="{y + BAR + 4}">{escape(name)}</text>')
        for i, size in enumerate(sizes):
            value = values[size]
            top = y + i * BAR
            out.append(
                f'<rect x="{LABEL_WIDTH}" y="{top}" width="{max(value * scale, 1):.1f}" '
                f'height="{BAR - 3}" fill="{COLOURS[i]}"/>'
            )
            out.append(
                f'<text x="{LABEL_WIDTH + max(value * scale, 1) + 6:.1f}" y="{top + BAR - 7}">'
                f"{value:.1f} ms</text>"
            )
    measured = results["environment"]
    out.append(
        f'<text x="10" y="{height - 12}" fill="#555">Median of '
        f"{results['parameters']['repetitions']} repetitions; {escape(measured['date'][:10])}, "
        f"{measured['cpus']} CPUs. Lower is better.</text>"
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT_RESULTS
    target = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUTPUT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(svg(json.loads(source.read_text())))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
