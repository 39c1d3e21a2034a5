"""Replay of recorded provider traffic, for tests, benchmarks and the demo."""
