"""Portrait: real-time customer profiles from chat, call and channel events."""

__version__ = "0.1.0"
