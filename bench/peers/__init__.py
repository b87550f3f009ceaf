"""Peer task runtimes measured against hulk on the same servers and the same no-op workload.

One module per peer (`python -m bench.peers.<module> --tasks N` prints one JSON result line); the
harness (`bench.peers.harness`) runs each as a producer + worker process pair on a server the bench
starts itself. The peers are an optional dependency group (`pip install -e '.[peers]'`), never a
dependency of hulk.
"""

PEERS = ("raw_nats", "faststream_peer", "taskiq_peer", "arq_peer", "dramatiq_peer", "celery_peer")
