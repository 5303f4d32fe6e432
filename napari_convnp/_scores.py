"""The score table: every run's results scored on the hidden pixels of its mask, where the truth is known, kept
side by side (method, mask, reference, density) and sortable by any column."""
from __future__ import annotations

import math

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractItemView, QTableWidget, QTableWidgetItem

from ._tooltips import TOOLTIPS

COLUMNS = ("method", "PSNR dB", "SSIM", "RMSE", "NLL", "95 % cov.", "mask", "reference", "density")
ROWS_SHOWN = 7  # rows the table shows without scrolling: a typical comparison of methods or densities


class _Cell(QTableWidgetItem):
    """A cell that sorts by its value (numbers as numbers; a missing score, '–', after every number)."""

    def __init__(self, text: str, value):
        super().__init__(text)
        missing = isinstance(value, float) and not math.isfinite(value)
        self.key = (missing, 0.0 if missing else value)

    def __lt__(self, other):
        return self.key < other.key


def _number(value, spec: str) -> _Cell:
    value = float("nan") if value is None else float(value)
    return _Cell("–" if not math.isfinite(value) else format(value, spec), value)


class ScoreTable(QTableWidget):
    """One row per result of a run with a known truth, kept across runs of one scene: a re-run with the same
    settings replaces its row, another mask, reference or density adds one. NLL and 95 % coverage (how well
    the variance describes the error) for results with a variance (the ConvNP)."""

    def __init__(self):
        super().__init__(0, len(COLUMNS))
        self.setHorizontalHeaderLabels(COLUMNS)
        self.setToolTip(TOOLTIPS["scores"])
        self.verticalHeader().setVisible(False)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # run order until a click
        self.setSortingEnabled(True)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)  # compact: 7 rows in little room
        self.setMinimumHeight(self.horizontalHeader().sizeHint().height() + 2 * self.frameWidth()
                              + ROWS_SHOWN * self.verticalHeader().defaultSectionSize()
                              + self.horizontalScrollBar().sizeHint().height())
        self.rows: dict[tuple, tuple] = {}  # (label, mask, reference) → (scores, density)

    def add(self, job, label: str, scores: dict) -> None:
        """The row of this result; job.replace: the earlier rows of this label go, as their layers do."""
        if job.replace:
            self.rows = {key: row for key, row in self.rows.items() if key[0] != label}
        self.rows[(label, job.mask_name, job.reference_name)] = (scores, job.density)
        self._show()

    def forget(self, mask: str | None = None) -> None:
        """Drop the rows of this mask (it was made anew: they no longer describe it), or every row."""
        self.rows = {key: row for key, row in self.rows.items() if mask is not None and key[1] != mask}
        self._show()

    def _show(self) -> None:
        self.setSortingEnabled(False)  # rows in place first, then sorted by the column the user chose
        self.setRowCount(len(self.rows))
        for row, ((label, mask, reference), (s, density)) in enumerate(self.rows.items()):
            cells = [_Cell(label, label), _number(s["psnr"], ".2f"), _number(s["ssim"], ".3f"),
                     _number(s["rmse"], ".4g"), _number(s.get("nll"), ".3f"), _number(s.get("coverage95"), ".1%"),
                     _Cell(mask, mask), _Cell(reference or "none", reference), _Cell(f"{density:.0%}", density)]
            for col, cell in enumerate(cells):
                self.setItem(row, col, cell)
        self.setSortingEnabled(True)
        self.resizeColumnsToContents()
