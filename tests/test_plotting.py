import json
import math

import pytest
import torch

from ibzoo.plotting import Series, line_chart, nice_ticks, plot_training_log, side_by_side

RED, BLUE = (214, 39, 40), (31, 119, 180)
LEGEND_OUTLINE = (200, 200, 200)


def _pixels_of(image, color):
    """(x, y) of every pixel of exactly ``color``."""
    rgb = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3)
    rows, columns = torch.nonzero((rgb == torch.tensor(color, dtype=torch.uint8)).all(dim=-1), as_tuple=True)
    return list(zip(columns.tolist(), rows.tolist(), strict=True))


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.13, 0.97, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.0, 980.0, [0.0, 200.0, 400.0, 600.0, 800.0, 1000.0]),
        (-5.2, -0.1, [-6.0, -4.0, -2.0, 0.0]),
        (0.0, 11.0, [0.0, 2.5, 5.0, 7.5, 10.0, 12.5]),
        (3.0, 3.0, [1.0, 2.0, 3.0, 4.0, 5.0]),  # a flat line gets an axis around its value
    ],
)
def test_nice_ticks(low, high, expected):
    assert nice_ticks(low, high) == pytest.approx(expected)


def test_nice_ticks_rejects_bad_ranges():
    with pytest.raises(ValueError, match="low <= high"):
        nice_ticks(2.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, math.inf)


def test_line_chart_puts_points_where_the_axes_say():
    # y = x from (0, 0) to (10, 10): the red pixels rise left to right along the diagonal, and a flat
    # blue line at y = 5 is drawn at the height halfway between the lowest and the highest red pixel.
    rising = Series("rising", [0.0, 10.0], [0.0, 10.0], color=RED)
    flat = Series("flat", [0.0, 10.0], [5.0, 5.0], color=BLUE)
    image = line_chart([rising, flat], title="t", x_label="x", y_label="y", size=(300, 200))
    assert image.size == (300, 200)
    red, blue = _pixels_of(image, RED), _pixels_of(image, BLUE)
    lowest = max(red, key=lambda p: p[1])  # image rows grow downwards
    highest = min(red, key=lambda p: p[1])
    assert lowest[0] < highest[0]
    left, top, right, bottom = _legend_box(image)
    blue_rows = {y for x, y in blue if not (left <= x <= right and top <= y <= bottom)}  # not the swatch
    assert max(blue_rows) - min(blue_rows) <= 2
    assert abs(sum(blue_rows) / len(blue_rows) - (lowest[1] + highest[1]) / 2) <= 2


def test_line_chart_skips_non_finite_points_and_needs_one():
    series = Series("gappy", [0.0, 1.0, 2.0], [1.0, math.nan, 3.0], color=RED)
    assert series.points() == [(0.0, 1.0), (2.0, 3.0)]
    with pytest.raises(ValueError, match="no finite points"):
        line_chart([Series("empty", [0.0], [math.inf])], title="t", x_label="x", y_label="y")
    with pytest.raises(ValueError, match="2 x values but 1 y values"):
        Series("bad", [0.0, 1.0], [1.0]).points()


def test_side_by_side():
    left = line_chart([Series("a", [0, 1], [0, 1])], title="a", x_label="x", y_label="y", size=(100, 80))
    right = line_chart([Series("b", [0, 1], [0, 1])], title="b", x_label="x", y_label="y", size=(120, 90))
    row = side_by_side([left, right])
    assert row.size == (220, 90)
    assert row.crop((100, 0, 220, 90)).tobytes() == right.tobytes()


def test_plot_training_log_draws_loss_and_information_plane(tmp_path):
    rows = [{"step": s, "train/ssl_loss": 1.0 / (s + 1), "epoch": 0, "note": "warmup"} for s in range(5)]
    rows[4].update(mutual_information=2.0, z1_target_information=-1.0)
    rows[0].update(mutual_information=3.0, z1_target_information=-3.0)
    log_file = tmp_path / "log.jsonl"
    log_file.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    image = plot_training_log(log_file)
    assert image.size == (960, 360)  # two 480 x 360 panels
    assert _pixels_of(image.crop((480, 0, 960, 360)), RED)  # the information-plane trajectory


def test_plot_training_log_without_known_keys(tmp_path):
    log_file = tmp_path / "log.jsonl"
    log_file.write_text(json.dumps({"step": 1, "lr": 0.1}))
    assert plot_training_log(log_file) is None
    log_file.write_text("not json")
    with pytest.raises(ValueError, match=r"log\.jsonl:1 is not a JSON object"):
        plot_training_log(log_file)


def _legend_box(image):
    """(left, top, right, bottom) of the legend: the one box drawn in LEGEND_OUTLINE."""
    outline = _pixels_of(image, LEGEND_OUTLINE)
    xs, ys = [x for x, _ in outline], [y for _, y in outline]
    return min(xs), min(ys), max(xs), max(ys)


def test_line_chart_legend_takes_the_right_hand_corner_its_lines_leave_free():
    # Lines in the upper half: the legend goes to the bottom right; in the lower half, to the top right.
    # Either way it is as wide as its longest label needs (about 6 px a character) and on the right.
    # A dot at x = 0 on the far side holds the y axis at 0..10.
    for low, high, other_end, legend_below in ((8.0, 10.0, 0.0, True), (0.0, 2.0, 10.0, False)):
        series = [
            Series("short", [0.0, 10.0], [low, high], color=RED),
            Series("a much, much longer label", [0.0, 10.0], [high, low], color=BLUE),
            Series("axis", [0.0], [other_end]),
        ]
        image = line_chart(series, title="t", x_label="x", y_label="y", size=(480, 360))
        left, top, right, _ = _legend_box(image)
        assert (top > image.height / 2) == legend_below, (low, high)
        assert right > 0.9 * image.width and right - left > 25 * 5
