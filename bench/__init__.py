"""Benchmarks (bench/README.md): each `bench/<name>.py` is a script, run as `.venv/bin/python bench/<name>.py`;
`bench/_<name>/` holds its parts, and the modules `bench/_*.py` what they share. A package so that the scripts'
parts are imported, and type-checked, under one name (`bench.…`)."""
