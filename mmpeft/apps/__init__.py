"""Applications built on the mmpeft library: the demo, the quickstart, the tiny offline towers, the command line.

Nothing in the library imports this package; it imports the library.
"""
