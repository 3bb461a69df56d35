"""Small line charts drawn with Pillow alone: the training curves that go into a model card.

matplotlib is not a dependency of ibzoo, and a model card needs only two pictures of a run's
``log.jsonl``: the loss against the step, and the run's path through the information plane of
"Projection Head is Secretly an Information Bottleneck" (Ouyang et al., ICLR 2025, arXiv:2503.00507),
I(Z1; R) against I(Z1; Z2), where a good projector keeps I(Z1; R) high while I(Z1; Z2) falls.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "LOSS_KEYS",
    "PLANE_KEYS",
    "Series",
    "line_chart",
    "nice_ticks",
    "plot_training_log",
    "side_by_side",
]

# Field names of ibzoo.objectives.ObjectiveOutput / InformationPlane, as the training loop logs them
# (a "train/" style prefix is ignored).
LOSS_KEYS = ("loss", "ssl_loss")
PLANE_KEYS = ("mutual_information", "z1_target_information")  # x: I(Z1; Z2), y: I(Z1; R)
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189))
_MARGINS = (64, 28, 16, 44)  # left, top, right, bottom: room for tick labels, the title and the x label
_TICK_STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Series:
    """One line of a chart: the points (x[i], y[i]) joined in order; non-finite points are skipped."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: tuple[int, int, int] = PALETTE[0]

    def points(self) -> list[tuple[float, float]]:
        if len(self.x) != len(self.y):
            raise ValueError(f"Series {self.label!r} has {len(self.x)} x values but {len(self.y)} y values.")
        return [(x, y) for x, y in zip(self.x, self.y, strict=True) if math.isfinite(x) and math.isfinite(y)]


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round ticks (steps of 1, 2, 2.5 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or low > high or count < 1:
        raise ValueError(f"nice_ticks needs finite low <= high and count >= 1, got {low}, {high}, {count}.")
    if low == high:  # a flat line still gets an axis around its value
        half = abs(low) / 2 or 0.5
        low, high = low - half, high + half
    raw_step = (high - low) / count
    magnitude = 10.0 ** math.floor(math.log10(raw_step))
    step = next(m * magnitude for m in _TICK_STEPS if m * magnitude >= raw_step * (1 - 1e-9))
    first, last = math.floor(low / step + 1e-9), math.ceil(high / step - 1e-9)
    return [round(i * step, 12) for i in range(first, last + 1)]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    x_label: str,
    y_label: str,
    size: tuple[int, int] = (480, 360),
    mark_last: bool = False,
) -> Image.Image:
    """An RGB chart of ``series`` with ticks, axis labels, a title and (for several series) a legend.

    ``mark_last`` draws a dot on each series' last point, to show where a trajectory ends.
    """
    lines = [(s, s.points()) for s in series]
    xs = [x for _, points in lines for x, _ in points]
    ys = [y for _, points in lines for _, y in points]
    if not xs:
        raise ValueError(f"line_chart {title!r}: no finite points to draw.")
    x_ticks, y_ticks = nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys))
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = _MARGINS[0], _MARGINS[1], size[0] - _MARGINS[2], size[1] - _MARGINS[3]

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        fx = (x - x_ticks[0]) / (x_ticks[-1] - x_ticks[0])
        fy = (y - y_ticks[0]) / (y_ticks[-1] - y_ticks[0])
        return left + fx * (right - left), bottom - fy * (bottom - top)

    for value in x_ticks:
        px = to_pixel(value, y_ticks[0])[0]
        draw.line([(px, top), (px, bottom)], fill=(230, 230, 230))
        draw.text((px, bottom + 4), f"{value:.4g}", fill="black", font=font, anchor="mt")
    for value in y_ticks:
        py = to_pixel(x_ticks[0], value)[1]
        draw.line([(left, py), (right, py)], fill=(230, 230, 230))
        draw.text((left - 4, py), f"{value:.4g}", fill="black", font=font, anchor="rm")
    draw.rectangle([(left, top), (right, bottom)], outline="black")
    for line, points in lines:
        pixels = [to_pixel(x, y) for x, y in points]
        if len(pixels) > 1:
            draw.line(pixels, fill=line.color, width=2, joint="curve")
        if mark_last or len(pixels) == 1:
            px, py = pixels[-1]
            draw.ellipse([(px - 3, py - 3), (px + 3, py + 3)], fill=line.color)
    draw.text(((left + right) / 2, top / 2), title, fill="black", font=font, anchor="mm")
    draw.text(((left + right) / 2, size[1] - 8), x_label, fill="black", font=font, anchor="md")
    _draw_vertical_text(image, y_label, center=(10, (top + bottom) // 2), font=font)
    if len(lines) > 1:
        # As wide as the longest label, on white, in the right-hand corner (top or bottom) that hides
        # fewer of the lines' pixels.
        width = 22 + max(draw.textlength(line.label, font=font) for line, _ in lines)
        height = 14 * len(lines) + 2
        legend_left = max(left + 2, right - 4 - width)  # a label too long for the plot runs past its edge
        drawn = [pixel for _, points in lines for pixel in _along([to_pixel(x, y) for x, y in points])]
        legend_top = min(
            (top + 2, bottom - 2 - height),
            key=lambda y0: sum(x >= legend_left and y0 <= y <= y0 + height for x, y in drawn),
        )
        box = [(legend_left, legend_top), (right - 2, legend_top + height)]
        draw.rectangle(box, fill="white", outline=(200, 200, 200))
        for row, (line, _) in enumerate(lines):
            y = legend_top + 8 + 14 * row
            draw.rectangle([(legend_left + 4, y - 4), (legend_left + 14, y + 4)], fill=line.color)
            draw.text((legend_left + 18, y), line.label, fill="black", font=font, anchor="lm")
    return image


def _along(pixels: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """About one point per pixel along a polyline through ``pixels`` (where its line is drawn)."""
    along = pixels[:1]
    for (x0, y0), (x1, y1) in itertools.pairwise(pixels):
        samples = max(1, round(math.hypot(x1 - x0, y1 - y0)))
        along += [(x0 + (x1 - x0) * t / samples, y0 + (y1 - y0) * t / samples) for t in range(1, samples + 1)]
    return along


def _draw_vertical_text(
    image: Image.Image, text: str, center: tuple[int, int], font: ImageFont.ImageFont
) -> None:
    """Draw ``text`` rotated a quarter turn (reading upwards), centred on ``center``."""
    left, top, right, bottom = font.getbbox(text)
    label = Image.new("RGB", (right - left + 2, bottom - top + 2), "white")
    ImageDraw.Draw(label).text((1 - left, 1 - top), text, fill="black", font=font)
    label = label.rotate(90, expand=True)
    image.paste(label, (center[0] - label.width // 2, center[1] - label.height // 2))


def side_by_side(images: Sequence[Image.Image]) -> Image.Image:
    """The images in one row, top-aligned, on white."""
    if not images:
        raise ValueError("side_by_side needs at least one image.")
    row = Image.new("RGB", (sum(i.width for i in images), max(i.height for i in images)), "white")
    x = 0
    for image in images:
        row.paste(image, (x, 0))
        x += image.width
    return row


def _read_log(log_file: Path) -> list[dict[str, float]]:
    """The numeric fields of each JSON line, keyed by their name without a "prefix/"."""
    records = []
    for number, line in enumerate(Path(log_file).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{log_file}:{number} is not a JSON object ({error}); is it a log.jsonl?"
            ) from None
        records.append(
            {
                key.rsplit("/", 1)[-1]: float(value)
                for key, value in record.items()
                if isinstance(value, int | float) and not isinstance(value, bool)
            }
        )
    return records


def _column(
    records: Iterable[Mapping[str, float]], x_key: str, y_key: str
) -> tuple[list[float], list[float]]:
    pairs = [(r[x_key], r[y_key]) for r in records if x_key in r and y_key in r]
    return [x for x, _ in pairs], [y for _, y in pairs]


def plot_training_log(log_file: Path) -> Image.Image | None:
    """Loss curves and the information plane of a ``log.jsonl``; None when it logs neither.

    Reads the records that have a ``step`` and the :data:`LOSS_KEYS`, and those that have both
    :data:`PLANE_KEYS` (logged at information-plane intervals).
    """
    records = _read_log(log_file)
    panels = []
    losses = [
        Series(key, *_column(records, "step", key), color=PALETTE[i]) for i, key in enumerate(LOSS_KEYS)
    ]
    losses = [s for s in losses if s.points()]
    if losses:
        panels.append(line_chart(losses, title="Training loss", x_label="step", y_label="loss"))
    plane = Series("run", *_column(records, *PLANE_KEYS), color=PALETTE[3])
    if plane.points():
        panels.append(
            line_chart(
                [plane],
                title="Information plane (dot: last step)",
                x_label="I(Z1; Z2)",
                y_label="I(Z1; R)",
                mark_last=True,
            )
        )
    return side_by_side(panels) if panels else None
