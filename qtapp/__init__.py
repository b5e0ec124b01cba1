"""QuantDesk's PySide6 window: a thin layer over ``engine``."""
