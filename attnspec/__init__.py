"""attnspec: conformance and benchmarks for LLM-inference primitives.

One import package, `attnspec`: `attnspec.specs` (the contract), `attnspec.implementations`,
`attnspec.reports` and `attnspec.suite`. In a checkout those four live at the repository's top
level (specs/, implementations/, reports/, suite/); the links here make them this package's.
"""
