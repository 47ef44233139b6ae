"""Side-by-side measurements of planet_async, the `planet` SDK's auth, authlib and a static header.

Run them with ``nox -s bench`` or ``python -m benchmarks`` from the repository root; see
``benchmarks/README.md`` for what each one measures and how to read its table.
"""
