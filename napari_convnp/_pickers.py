"""The combo boxes of layers: one class, kept in step with the viewer's layer list by the widget."""
from __future__ import annotations

from typing import Callable

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QComboBox, QPushButton


class LayerPicker(QComboBox):
    """A combo box of the viewer's layers that pass `accepts` (newest first), optionally with a 'none'
    entry; the owner keeps it in step with the layer list (`GapFillWidget._picker`)."""

    changed = Signal(object)

    def __init__(self, viewer, accepts: Callable[[object], bool], *, none: str | None = None, tooltip: str = ""):
        super().__init__()
        self.viewer, self.accepts, self.none = viewer, accepts, none
        self._layers: list = []
        self.setToolTip(tooltip)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.currentIndexChanged.connect(lambda _: self.changed.emit(self.value))
        self.refresh()

    @property
    def value(self):
        index = self.currentIndex()
        return self._layers[index] if 0 <= index < len(self._layers) else None

    @value.setter
    def value(self, layer) -> None:
        self.refresh()
        for i, candidate in enumerate(self._layers):
            if candidate is layer:
                self.setCurrentIndex(i)
                return
        if layer is not None:
            raise ValueError(f"layer {getattr(layer, 'name', layer)!r} is not a choice here")

    def refresh(self) -> None:
        """Rebuild the choices; the current layer stays chosen while it exists."""
        current = self.value
        layers = [layer for layer in reversed(list(self.viewer.layers)) if self.accepts(layer)]
        choices = ([None] if self.none is not None else []) + layers
        self.blockSignals(True)
        self.clear()
        self._layers = choices
        self.addItems([self.none if layer is None else layer.name for layer in choices])
        index = next((i for i, layer in enumerate(choices) if layer is current and current is not None), 0)
        self.setCurrentIndex(index if choices else -1)
        self.blockSignals(False)
        if self.value is not current:
            self.changed.emit(self.value)



def button(text: str, slot: Callable[[], object], tooltip: str) -> QPushButton:
    """A push button that calls slot() with no argument: Qt's clicked(checked) would hand `checked` to a slot
    wrapped by `_reports_input_errors` (which takes any arguments), and the slot would fail on it."""
    push = QPushButton(text)
    push.setToolTip(tooltip)
    push.clicked.connect(lambda _checked=False: slot())
    return push


def invert_box(tooltip: str) -> QCheckBox:
    """The mask's 'invert' choice: its 0 marks the pixels to fill (a mask of the valid pixels), applied at Run."""
    box = QCheckBox("invert (0 = fill)")
    box.setToolTip(tooltip)
    return box
