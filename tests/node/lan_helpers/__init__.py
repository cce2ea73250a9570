"""Programs that tests/node/test_lan.py runs inside network namespaces (JSON lines in and out)."""
