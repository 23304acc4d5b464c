"""`stream-risk demo`: an embedded broker, a simulated market and book, the engine, a live view.

Modules: `market` (the simulated market), `book` (the simulated market-maker book),
`runner` (the orchestration and the terminal view), `cli` (`stream-risk demo` arguments and
handler). Importing this package is cheap: nothing heavy is imported until a demo runs.
"""
