"""Audio: 20 ms mono frames captured, Opus-coded, buffered for playout, mixed and played.

Pure cores (no loop, clock or device): ``format``, ``playout``, ``jitter``, ``mixer``, ``levels``,
``spec``, ``events``, ``errors``. Adapters: ``opus`` (libopus via ctypes), ``devices``
(sounddevice), ``files`` (PyAV), ``sources``, ``sinks``, ``clock`` and ``engine`` (asyncio).

This package imports nothing on its own so that importing a pure core stays pure.
"""
