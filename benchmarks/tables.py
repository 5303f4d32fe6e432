"""Write the Markdown tables of benchmarks/README.md from the JSON files beside this script.

Each table sits between `<!-- tables.py: NAME -->` and `<!-- /tables.py -->`; only what lies between is rewritten,
so the prose around the tables stays as written. The numbers come from the files, never from the page: re-run this
after a benchmark rewrites its JSON.

python benchmarks/tables.py [--check]   (--check: rewrite nothing, exit 1 if the page is not what the files give)
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from napari_convnp.evaluate import markdown

HERE = Path(__file__).resolve().parent
PAGE = HERE / "README.md"
BLOCK = re.compile(r"(<!-- tables\.py: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /tables\.py -->)", re.S)
SIZE = {"512": "512×512", "1024": "1024×1024", "4096": "4096×4096", "full": "7000×8000"}
SCENE = {"1024": "1024²", "4096": "4096²", "full": "7000×8000", "1024+reference": "1024², its own run"}


def load(name: str) -> dict:
    return json.loads((HERE / name).read_text(encoding="utf-8"))


def seconds(s: float) -> str:
    """As a reader says it: 4.3 s, 80.6 s, 4 min 21 s."""
    if s < 120:
        return f"{s:.1f} s"
    minutes, rest = divmod(round(s), 60)
    return f"{minutes} min {rest} s"


def short(s: float) -> str:
    """Two decimals under 2 s, one above: what a timing of one run can tell."""
    return f"{s:.2f}" if s < 2 else f"{s:.1f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def evaluation(two_dates: bool) -> str:
    """`napari-convnp evaluate`'s own tables (evaluate.markdown), one date or two dates (a set whose table has a
    `convnp + reference` row)."""
    results = load("evaluation.json")
    chosen = {name: scores for name, scores in results.items()
              if isinstance(scores, dict) and ("convnp + reference" in scores) == two_dates}
    return markdown(chosen).rstrip("\n") + "\n"


def command_name(run: str) -> str:
    return run.replace("convnp", "ConvNP").replace(" --", " `--").replace("--variance", "--variance`") \
        .replace("--reference", "--reference`")


def end_to_end() -> str:
    """`napari-convnp fill` process start to file written: the code then ("after") beside the code at the start
    of that session ("before"), then the separate run with one reference."""
    header = ["scene (6 bands)", "command", "end to end, after", "end to end, before", "fill call, after",
              "fill call, before", "peak RSS after", "peak RSS before"]
    rows = []
    for name in ("end_to_end_cpu.json", "end_to_end_reference_cpu.json"):
        summary = load(name)["summary"]
        for case, run in dict.fromkeys((s["case"], s["run"]) for s in summary):
            after = next(s for s in summary if (s["case"], s["run"], s["code"]) == (case, run, "/work/main"))
            before = next((s for s in summary if (s["case"], s["run"]) == (case, run) and s is not after), None)
            rows.append([SCENE[case], command_name(run), seconds(after["wall_seconds"]),
                         seconds(before["wall_seconds"]) if before else "–", seconds(after["fill_seconds"]),
                         seconds(before["fill_seconds"]) if before else "–", f"{after['peak_rss_gb']:.2f} GB",
                         f"{before['peak_rss_gb']:.2f} GB" if before else "–"])
    return table(header, rows)


def speed_cpu() -> str:
    """The `fill()` call alone on arrays in memory, each case in its own process."""
    rows = load("speed_cpu.json")["rows"]
    header = ["size (6 bands)", "method", "precision", "seconds", "Mpx/s", "time ÷ ConvNP float32", "peak RSS GiB"]
    base = {r["size"]: r["seconds"] for r in rows if (r["method"], r["precision"]) == ("convnp", "float32")}
    return table(header, [[SIZE[r["size"]], r["method"], r["precision"], f"{r['seconds']:.2f}",
                           f"{r['megapixels_per_second']:.3f}", f"{r['seconds'] / base[r['size']]:.2f}",
                           f"{r['peak_rss_gib']:.2f}"] for r in rows])


def gpu_before_after() -> str:
    """The first two GPU runs: the code as it was (514838e) and after tiles were normalised and blended on the GPU."""
    runs = {"before": (load("speed_cuda_514838e.json"), load("end_to_end_cuda_514838e.json")),
            "after": (load("speed_cuda.json"), load("end_to_end_cuda.json"))}
    header = ["6 bands"] + [f"{when} ({speed['commit']})" for when, (speed, _) in runs.items()]

    def fill_calls(size, methods):
        cells = []
        for speed, _ in runs.values():
            found = {(r["method"], r["precision"]): r for r in speed["rows"]
                     if r["size"] == size and r["memory_fraction"] == 1}
            cells.append(" / ".join(short(found[m]["seconds"]) for m in methods) + " s"
                         if all(m in found for m in methods) else "–")
        return cells

    def capped():
        cells = []
        for speed, _ in runs.values():
            row = next((r for r in speed["rows"] if r["memory_fraction"] < 1), None)
            tiles = [re.search(r"(\d+)-pixel", note)[1] for note in row["out_of_memory_retries"]] if row else []
            cells.append("–" if row is None else
                         f"{short(row['seconds'])} s: out of memory {len(tiles)}×, on with {' → '.join(tiles)}-px "
                         f"tiles; GPU peak {row['gpu_peak_gib']:.2f} GiB")
        return cells

    def commands(case, names):
        cells = []
        for _, e2e in runs.values():
            rows = {s["run"]: s for s in e2e["summary"] if s["case"] == case}
            if case == "full":
                s = rows[names[0]]
                cells.append(f"{seconds(s['wall_seconds'])} (fill call {seconds(s['fill_seconds'])}), "
                             f"{s['peak_rss_gb']:.2f} GB")
            else:
                cells.append(" / ".join(f"{rows[n]['wall_seconds']:.1f}" for n in names) + " s")
        return cells

    f32, bf16 = ("convnp", "float32"), ("convnp", "bfloat16")
    cap = min(r["memory_fraction"] for speed, _ in runs.values() for r in speed["rows"])
    rows = [["`fill()` call, 1024², float32 / bfloat16"] + fill_calls("1024", [f32, bf16]),
            ["`fill()` call, 1024², biharmonic (CPU)"] + fill_calls("1024", [("biharmonic", "float32")]),
            ["`fill()` call, 4096², float32 / bfloat16"] + fill_calls("4096", [f32, bf16]),
            ["`fill()` call, 7000×8000, float32 / bfloat16"] + fill_calls("full", [f32, bf16]),
            [f"the same, bfloat16, GPU capped at {cap * 100:g} % of its memory"] + capped(),
            ["`napari-convnp fill` 1024², bfloat16 / float32 / biharmonic, end to end"]
            + commands("1024", ["convnp bfloat16", "convnp float32", "biharmonic"]),
            ["`napari-convnp fill` 7000×8000, bfloat16 `--variance`, end to end"]
            + commands("full", ["convnp bfloat16 --variance"])]
    return table(header, rows)


def gpu_in_place() -> str:
    """The third GPU run: the full scene's `fill()` in memory before and after the rows went straight into the
    result, two interleaved rounds."""
    rows = load("speed_cuda_in_place.json")["rows"]

    def cell(code, precision, key="seconds", fmt="{:.2f}"):
        return " / ".join(fmt.format(r[key]) for r in sorted(rows, key=lambda r: r["round"])
                          if (r["code"], r["precision"]) == (code, precision)) + " s"

    def peak(code):
        return f"{max(r['peak_rss_gib'] for r in rows if (r['code'], r['precision']) == (code, 'float32')):.1f} GiB"

    return table(["7000×8000×6, `fill()` in memory, H200", "before", "after"],
                 [["float32", cell("before", "float32"), cell("after", "float32")],
                  ["bfloat16", cell("before", "bfloat16"), cell("after", "bfloat16")],
                  ["peak RSS (float32)", peak("before"), peak("after")]])


TABLES = {"evaluation-one-date": lambda: evaluation(False), "evaluation-two-dates": lambda: evaluation(True),
          "end-to-end": end_to_end, "speed-cpu": speed_cpu, "gpu-before-after": gpu_before_after,
          "gpu-in-place": gpu_in_place}


def rewrite(page: str) -> str:
    def fill(match):
        name = match["name"]
        if name not in TABLES:
            raise SystemExit(f"tables.py: error: {PAGE.name}: no table named {name!r} (known: {', '.join(TABLES)})")
        return match[1] + TABLES[name]() + match[4]
    return BLOCK.sub(fill, page)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    page = PAGE.read_text(encoding="utf-8")
    new = rewrite(page)
    if args.check:
        print("up to date" if new == page else f"{PAGE} differs from its JSON files; run benchmarks/tables.py")
        return 0 if new == page else 1
    PAGE.write_text(new, encoding="utf-8")
    print(f"wrote {len(BLOCK.findall(new))} tables into {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
