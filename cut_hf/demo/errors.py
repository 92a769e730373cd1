"""The one error type of the demo's handlers."""


class DemoError(ValueError):
    """Bad input or an unloadable model; the message is shown to the user as it is (one line).

    Handlers raise it without importing gradio, so they stay testable on their own; ``app.py``
    turns it into ``gr.Error``.
    """
