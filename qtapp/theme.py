"""A dark palette for ``quantdesk gui --theme dark`` (and the README's dark screenshot)."""

from __future__ import annotations

from PySide6.QtGui import QColor, QPalette


def dark_palette() -> QPalette:
    p = QPalette()
    role, group = QPalette.ColorRole, QPalette.ColorGroup
    colours = {
        role.Window: "#202225", role.WindowText: "#e8e8e8", role.Base: "#17181a", role.AlternateBase: "#26282c",
        role.ToolTipBase: "#2b2d31", role.ToolTipText: "#e8e8e8", role.Text: "#e8e8e8", role.Button: "#2b2d31",
        role.ButtonText: "#e8e8e8", role.BrightText: "#ff6b6b", role.Highlight: "#2d6cdf",
        role.HighlightedText: "#ffffff", role.Link: "#74a7ff", role.PlaceholderText: "#9aa0a6",
        role.Mid: "#4a4d52", role.Midlight: "#3a3d42", role.Dark: "#141517", role.Shadow: "#000000",
        role.Light: "#3f4247",
    }
    for r, c in colours.items():
        p.setColor(r, QColor(c))
    for r in (role.WindowText, role.Text, role.ButtonText):
        p.setColor(group.Disabled, r, QColor("#6c7075"))
    return p


def apply(app, theme: str | None) -> None:
    """``dark`` or ``light`` force a palette (on the Fusion style); anything else keeps the system's."""
    if theme not in ("dark", "light"):
        return
    app.setStyle("Fusion")
    if theme == "dark":
        app.setPalette(dark_palette())
    else:
        app.setPalette(app.style().standardPalette())
