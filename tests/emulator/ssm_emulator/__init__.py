"""Local AWS emulator: moto server plus emulated SSM operations (see ../README.md)."""
