"""Draw training curves (loss, validation mIoU) from a metrics JSON-lines file into a PNG.

Drawn with Pillow so the run-time dependencies need no plotting library:
``python -m utils.curve --metrics SNAPSHOT/metrics.jsonl --out curve.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

from utils.cli import ArgumentParser, fail, output_file
from utils.fileio import atomic_write

PANEL_W, PANEL_H, MARGIN = 520, 300, 48
COLOURS = {"loss": (200, 60, 40), "mIoU": (40, 90, 200)}


def read_metrics(path: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Series by name from JSON lines holding ``iteration`` and any numeric fields."""
    series: dict[str, list[tuple[int, float]]] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            iteration = int(record["iteration"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} line {number}: not a metrics record ({error})") from None
        for key, value in record.items():
            if key != "iteration" and isinstance(value, int | float) and math.isfinite(value):
                series.setdefault(key, []).append((iteration, float(value)))
    return series


def _panel(
    title: str, points: list[tuple[int, float]], colour: tuple[int, int, int]
) -> Image.Image:
    image = Image.new("RGB", (PANEL_W, PANEL_H), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = MARGIN, MARGIN // 2, PANEL_W - MARGIN // 2, PANEL_H - MARGIN
    draw.rectangle((left, top, right, bottom), outline=(0, 0, 0))
    draw.text((left, 4), title, fill=(0, 0, 0))
    if not points:
        draw.text((left + 10, top + 10), "no data", fill=(0, 0, 0))
        return image
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1e-6
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x0) / (x1 - x0) * (right - left),
            bottom - (y - y0) / (y1 - y0) * (bottom - top),
        )

    pixels = [to_pixel(x, y) for x, y in points]
    if len(pixels) > 1:
        draw.line(pixels, fill=colour, width=2)
    for px, py in pixels if len(pixels) <= 50 else pixels[-1:]:
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
    draw.text((left, bottom + 6), f"iteration {x0}", fill=(0, 0, 0))
    draw.text((right - 90, bottom + 6), f"{x1}", fill=(0, 0, 0))
    draw.text((4, top), f"{y1:.3g}", fill=(0, 0, 0))
    draw.text((4, bottom - 10), f"{y0:.3g}", fill=(0, 0, 0))
    return image


def draw_curves(metrics_path: str | Path, out_path: str | Path) -> None:
    """Loss panel on the left, validation mIoU (when logged) on the right; written atomically."""
    series = read_metrics(metrics_path)
    miou_key = next((k for k in ("val_mIoU", "mIoU") if k in series), None)
    panels = [_panel("training loss", series.get("loss", []), COLOURS["loss"])]
    if miou_key:
        panels.append(_panel("validation mIoU", series[miou_key], COLOURS["mIoU"]))
    canvas = Image.new("RGB", (PANEL_W * len(panels), PANEL_H), "white")
    for i, panel in enumerate(panels):
        canvas.paste(panel, (i * PANEL_W, 0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    atomic_write(out_path, buffer.getvalue())


PROG = "python -m utils.curve"


def get_args_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", required=True, help="metrics.jsonl written by train.py")
    parser.add_argument("--out", required=True, type=output_file, help="PNG to write")
    return parser


def main(args: argparse.Namespace) -> None:
    """Every error is one ``python -m utils.curve: error: ...`` line; a picture is written whole
    or not at all."""
    if not Path(args.metrics).is_file():
        fail(PROG, f"--metrics {args.metrics}: file not found")
    try:
        draw_curves(args.metrics, args.out)
    except ValueError as error:
        fail(PROG, str(error))
    except OSError as error:
        fail(PROG, f"--out {args.out}: {error.strerror or error}", status=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
