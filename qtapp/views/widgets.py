"""Small widgets the views share: headings, a labelled meter, the error banner."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from qtapp.assets import icon


def heading(text: str) -> QLabel:
    label = QLabel(text)
    label.setObjectName("Heading")
    return label


def muted(text: str = "") -> QLabel:
    label = QLabel(text)
    label.setObjectName("Muted")
    label.setWordWrap(True)
    return label


def panel() -> tuple[QFrame, QVBoxLayout]:
    frame = QFrame()
    frame.setObjectName("Panel")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(10, 8, 10, 10)
    layout.setSpacing(6)
    return frame, layout


class Meter(QWidget):
    """A caption above a bar, e.g. 'RAM  9.1 GiB of 23.4 GiB used'."""

    def __init__(self, caption: str = "") -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.caption = QLabel(caption)
        self.caption.setWordWrap(True)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(False)
        self.bar.setObjectName("UsageBar")  # thin: sized by the style sheet
        layout.addWidget(self.caption)
        layout.addWidget(self.bar)

    def set(self, caption: str, used: float, total: float) -> None:
        self.caption.setText(caption)
        self.bar.setValue(int(1000 * used / total) if total else 0)


class Banner(QFrame):
    """A one-line message across the top of the window; errors in red, notes in blue."""

    closed = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("ErrorBanner")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(8, 6, 6, 6)
        self.icon = QLabel()
        self.icon.setPixmap(icon("error").pixmap(20, 20))
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QPushButton("Dismiss")
        close.clicked.connect(self.dismiss)
        layout.addWidget(self.icon, 0, Qt.AlignmentFlag.AlignTop)
        layout.addWidget(self.text, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_error(self, message: str) -> None:
        self._show(message, "ErrorBanner", True)

    def show_note(self, message: str) -> None:
        self._show(message, "InfoBanner", False)

    def _show(self, message: str, name: str, is_error: bool) -> None:
        self.setObjectName(name)
        self.icon.setVisible(is_error)
        self.style().unpolish(self)
        self.style().polish(self)
        self.text.setText(message)
        self.show()

    def dismiss(self) -> None:
        self.hide()
        self.closed.emit()


class Foldable(QWidget):
    """A titled section that opens on click: options most people never need stay folded away.

    (superqt's QCollapsible does this too, but importing superqt costs half a second
    before the first paint.)
    """

    def __init__(self, title: str) -> None:
        super().__init__()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setAutoRaise(True)
        self.toggle.toggled.connect(self._toggled)
        layout.addWidget(self.toggle)
        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(18, 0, 0, 0)
        self.body.hide()
        layout.addWidget(self.body)

    def addWidget(self, widget: QWidget) -> None:  # noqa: N802 - Qt's naming
        self.body_layout.addWidget(widget)

    def expand(self) -> None:
        self.toggle.setChecked(True)

    def _toggled(self, on: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.body.setVisible(on)
