"""The relay server: sans-IO protocol cores (``binding``) and their asyncio shims."""
