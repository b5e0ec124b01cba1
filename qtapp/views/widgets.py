"""Small widgets the views share: headings, a labelled meter, the error banner."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFontMetrics, QKeyEvent
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSizePolicy,
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


def fit_height(widget: QWidget) -> None:
    """Resize to the height the layout needs at the current width: wrapped lines are neither cut off nor padded."""
    layout = widget.layout()
    if layout is None:
        return
    layout.activate()
    width = widget.width()
    height = layout.heightForWidth(width) if layout.hasHeightForWidth() else -1
    widget.resize(width, max(height, layout.totalMinimumSize().height()))


class ElidedLabel(QLabel):
    """One line of plain text that shortens itself with "…" when narrow; the whole text is its tooltip."""

    def __init__(self, text: str = "", mode: Qt.TextElideMode = Qt.TextElideMode.ElideMiddle) -> None:
        super().__init__()
        self._full = ""
        self._mode = mode
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setMinimumWidth(40)
        self.setText(text)

    def setText(self, text: str) -> None:  # noqa: N802 - Qt's name
        self._full = text
        self.setToolTip(text)
        self._elide()

    def full_text(self) -> str:
        return self._full

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        shown = QFontMetrics(self.font()).elidedText(self._full, self._mode, max(self.width(), 40))
        super().setText(shown)


_PATH_ROLE = Qt.ItemDataRole.UserRole


class PickList(QListWidget):
    """Models one can open at once: the demo, the Hugging Face cache, recent ones; each listed once.

    A click selects (to read the tooltip); a double-click or Enter opens.
    """

    open_requested = Signal(Path)

    def __init__(self) -> None:
        super().__init__()
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.itemDoubleClicked.connect(self._open)

    def set_choices(self, entries: list[tuple[str, Path, str]]) -> None:
        """(text, path, tooltip) in order; a path already listed (the demo among the recent ones) is skipped."""
        self.clear()
        seen: set[str] = set()
        for text, path, tip in entries:
            key = _same_path_key(path)
            if key in seen:
                continue
            seen.add(key)
            item = QListWidgetItem(text)
            item.setData(_PATH_ROLE, str(path))
            item.setToolTip(tip)
            self.addItem(item)
        if self.count() and self.currentRow() < 0:
            self.setCurrentRow(0)

    def paths(self) -> list[Path]:
        return [Path(self.item(i).data(_PATH_ROLE)) for i in range(self.count())]

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802
        if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter) and self.currentItem() is not None:
            self._open(self.currentItem())
            return
        super().keyPressEvent(event)

    def _open(self, item: QListWidgetItem) -> None:
        self.open_requested.emit(Path(item.data(_PATH_ROLE)))


def _same_path_key(path: Path) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except OSError:
        return str(path)


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
    """A message floating over the top of the main area (it never pushes the layout down); errors in red.

    The parent keeps it placed (``place``); it clears on the next action that succeeds.
    """

    closed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("ErrorBanner")
        self.setAutoFillBackground(True)  # opaque: it floats over the tabs
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
        self.place()
        self.raise_()

    def place(self) -> None:
        """Across the top of the parent, as tall as the message needs."""
        parent = self.parentWidget()
        if parent is None:
            return
        width = max(200, parent.width() - 24)
        height = self.heightForWidth(width) if self.hasHeightForWidth() else self.sizeHint().height()
        self.setGeometry(12, 6, width, max(height, self.sizeHint().height()))

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
