"""`stream-risk demo`: an embedded broker, a simulated market and book, the engine, a live view.

Modules: `market` (the simulated market), `book` (the simulated market-maker book), `feed`
(both published to Kafka), `watcher` (the downstream consumer of `risk-actions`), `view`
(what the views show, the text formatting, the plain log lines), `rich_view` (the live
terminal view), `runner` (the run's orchestration and lifecycle), `stopping` (the stop
event's sleep and signals), `options` (`DemoOptions`), `simulate` (the market and book alone
against a Kafka you run), `cli` (`stream-risk demo` arguments and handler). Importing this
package is cheap: nothing heavy is imported until a demo runs.
"""
